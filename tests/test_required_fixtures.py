"""Required fixtures (``tests/conftest.py``): a missing one skips on a developer machine, fails under CI."""

from __future__ import annotations

import pytest
from conftest import require


def test_a_missing_required_fixture_fails_under_ci_and_skips_elsewhere(monkeypatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="required under CI: no chromium"):
        require(False, "no chromium")
    require(True, "present")  # a present fixture passes either way
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="no chromium"):
        require(False, "no chromium")


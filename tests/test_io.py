"""``bench.io.read_json``: orjson where installed, json otherwise, with the same values either way."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bench import io
from bench.errors import BenchInputError

TRICKY = ["0", "-0", "-0.0", "1e23", "9007199254740993", "2.2250738585072014e-308", "5e-324", "4.35",
          "1.7976931348623157e308", "0.30000000000000004", "123456789012345678901234567890e-20", "1e-400"]


@pytest.mark.parametrize("parser", ["orjson", "json"])
def test_values_are_json_modules(tmp_path: Path, parser: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every number the json module's value and type (floats by their bits), keys repeated (the last wins)."""
    if parser == "orjson":
        pytest.importorskip("orjson")
    else:
        monkeypatch.setattr(io, "_orjson", None)
    rng = np.random.default_rng(0)
    scale = 10.0 ** rng.integers(-300, 300, 3000)
    numbers = TRICKY + [repr(float(v)) for v in rng.standard_normal(3000) * scale]
    numbers += [f"{x:.{d}f}" for x, d in zip(rng.random(1000) * 1000, rng.integers(0, 20, 1000), strict=True)]
    text = '{"a": 1, "n": [' + ", ".join(numbers) + '], "s": "\\u00e9\\n", "a": [true, null]}'
    path = tmp_path / "x.json"
    path.write_text(text)
    got, expected = io.read_json(path), json.loads(text)
    assert [(type(v), repr(v)) for v in got["n"]] == [(type(v), repr(v)) for v in expected["n"]]
    assert got == expected


def test_what_only_json_reads_and_malformed_files(tmp_path: Path) -> None:
    """NaN / Infinity (not JSON: orjson refuses them) still read; a syntax error names its place."""
    path = tmp_path / "x.json"
    path.write_text('[NaN, Infinity, 1e999]')
    assert [str(v) for v in io.read_json(path)] == ["nan", "inf", "inf"]
    path.write_text('{"a": [1, 2}')
    with pytest.raises(BenchInputError, match="line 1 column 12"):
        io.read_json(path)

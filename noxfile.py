"""Developer sessions. They run in the active environment (set up by ``pip install -e ".[dev]"``), so the
multi-GB torch install is not repeated for every session."""

from __future__ import annotations

import nox

nox.options.default_venv_backend = "none"
nox.options.sessions = ["tests"]


@nox.session
def tests(session: nox.Session) -> None:
    """The whole test suite on CPU (about a few minutes on 2 cores)."""
    session.run("python", "-m", "pytest", "-q", "-n", "2", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    session.run("ruff", "check", ".")


@nox.session
def perf(session: nox.Session) -> None:
    """Speed benchmarks: every figure is a ratio against a reference measured in the same run."""
    session.run("python", "-m", "pytest", "-q", "-o", "addopts=", "-m", "perf", "--benchmark-only",
                "--benchmark-columns=min,mean,median,rounds", *session.posargs)

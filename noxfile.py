"""Developer sessions.

They run in the active environment (set up by ``pip install -e ".[dev]"``), so the multi-GB torch install is
not repeated for every session.
"""

from __future__ import annotations

import os
import shutil

import nox

nox.options.default_venv_backend = "none"
nox.options.sessions = ["tests"]


def _ensure_chromium(session: nox.Session) -> None:
    """The report's browser test needs Debian's chromium and chromedriver: install them if root."""
    if shutil.which("chromium") and shutil.which("chromedriver"):
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        session.warn("chromium/chromedriver missing and not installable here: the browser test will skip")
        return
    session.run("apt-get", "update", "-qq", external=True, silent=True)
    session.run("apt-get", "install", "-y", "-qq", "chromium", "chromium-driver", external=True, silent=True)


@nox.session
def tests(session: nox.Session) -> None:
    """The whole test suite on CPU, two workers (a few minutes on 2 cores)."""
    _ensure_chromium(session)
    session.run("python", "-m", "pytest", "-q", "-n", "2", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    session.run("ruff", "check", ".")


@nox.session
def perf(session: nox.Session) -> None:
    """Speed benchmarks: every figure is a ratio against a reference measured in the same run."""
    session.run("python", "-m", "pytest", "-q", "-s", "-o", "addopts=", "-m", "perf", "--benchmark-only",
                "--benchmark-columns=min,mean,median,rounds", *session.posargs)


@nox.session
def reproduce_voc(session: nox.Session) -> None:
    """VOC07+12 -> VOC07 test at 300 and 512 (needs a VOC root: --data via posargs or BENCH_VOC_ROOT)."""
    session.run("python", "-m", "bench.run", "--suite", "voc07", *session.posargs)
    session.run("python", "-m", "bench.run", "--suite", "voc07_512", *session.posargs)


@nox.session
def reproduce_coco(session: nox.Session) -> None:
    """COCO trainval35k -> minival (needs a COCO root: --data via posargs or BENCH_COCO_ROOT)."""
    session.run("python", "-m", "bench.run", "--suite", "coco", *session.posargs)

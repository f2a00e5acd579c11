"""Developer sessions.

They run in the active environment (set up by ``pip install -e ".[dev]"``), so the multi-GB torch install is
not repeated for every session.
"""

from __future__ import annotations

import os
import shutil
from datetime import datetime

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
def gpu(session: nox.Session) -> None:
    """The paths CPU tests cannot reach, run on the GPU into one JSON (``python -m bench.gpu_check``; posargs
    such as ``--out`` or ``--only`` go to it). Without CUDA it says why it skipped and succeeds."""
    session.run("python", "-m", "bench.gpu_check", *session.posargs)


# The reproduction sessions. "paper" runs each model as its paper trains it; "identical" is the fair
# comparison (the same data, schedule length, batch, precision and seed for every model, each family with its
# recipe); "_both" runs both and builds one report per table set with the paper's, the identical and the
# paper-protocol numbers side by side. They need the data (--data PATH in posargs, or BENCH_VOC_ROOT /
# BENCH_COCO_ROOT) and GPUs: see README. Runs land in results/reproduce/<timestamp>/<suite>.
PROTOCOLS = {
    "voc": {"paper": ["voc07_paper", "voc07_512_paper"], "identical": ["voc07", "voc07_512"]},
    "coco": {"paper": ["coco_paper"], "identical": ["coco"]},
}


def _run_suites(session: nox.Session, suites: list[str], stamp: str) -> list[str]:
    outs = []
    for suite in suites:
        out = f"results/reproduce/{stamp}/{suite}"
        session.run("python", "-m", "bench.run", "--suite", suite, "--out", out, *session.posargs)
        outs.append(out)
    return outs


def _reproduce(session: nox.Session, data: str, protocols: tuple[str, ...]) -> None:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    runs = {protocol: _run_suites(session, PROTOCOLS[data][protocol], stamp) for protocol in protocols}
    if len(protocols) == 2:  # one report per table set, both protocols beside the papers'
        for paper, identical in zip(runs["paper"], runs["identical"], strict=True):
            session.run("python", "-m", "reports.build", paper, "--compare", identical)


@nox.session
def reproduce_voc(session: nox.Session) -> None:
    """VOC07+12 -> VOC07 test at 300 and 512, the paper protocol (voc07_paper, voc07_512_paper)."""
    _reproduce(session, "voc", ("paper",))


@nox.session
def reproduce_voc_identical(session: nox.Session) -> None:
    """VOC07+12 -> VOC07 test at 300 and 512, the identical protocol (voc07, voc07_512)."""
    _reproduce(session, "voc", ("identical",))


@nox.session
def reproduce_voc_both(session: nox.Session) -> None:
    """Both VOC protocols, then reports with paper / identical / paper-protocol numbers per table."""
    _reproduce(session, "voc", ("paper", "identical"))


@nox.session
def reproduce_coco(session: nox.Session) -> None:
    """COCO train2017 -> val2017, the paper protocol (coco_paper)."""
    _reproduce(session, "coco", ("paper",))


@nox.session
def reproduce_coco_identical(session: nox.Session) -> None:
    """COCO train2017 -> val2017, the identical protocol (coco)."""
    _reproduce(session, "coco", ("identical",))


@nox.session
def reproduce_coco_both(session: nox.Session) -> None:
    """Both COCO protocols, then a report with paper / identical / paper-protocol numbers per table."""
    _reproduce(session, "coco", ("paper", "identical"))

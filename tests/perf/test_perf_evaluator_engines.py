"""The evaluator against pycocotools, hotcoco and ultrafast-pycocotools, processes timed whole.

Two problems: COCO-val-shaped (2,000 images, 80 classes, 100 detections per image) and dense (300 images,
1,500 detections per image). Each engine runs in its own process (interpreter start, imports, reading, COCO
evaluation); ``bench.evaluate`` runs three times: COCO-only metrics (``--protocols coco --bootstrap 0
--no-nwd --no-tide``), the full default metric set, and the full set with ``BENCH_NATIVE=0`` (the NumPy
forms of the compiled kernels of :mod:`bench.metrics.native`: what the kernels save, in the same run). The
12 COCO numbers are asserted identical to pycocotools' once, before timing (pycocotools, ~20 s a run, is
timed that once). Target (issue 12): full metric set <= 1.0x ultrafast's process time. Reported, not
asserted (shared machines are noisy): the median of ``ROUNDS`` rounds, each running every engine once in an
order that rotates from round to round.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
from coco_problem import write_problem

HERE = Path(__file__).resolve().parent
# Every engine runs from byte-compiled code: pip compiles what it installs (the other engines), and Python
# caches this tree's bytecode on its first import, unless PYTHONDONTWRITEBYTECODE (set on some CI images)
# makes every run of ours recompile its sources (~35 ms) while the others' stay compiled.
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
KERNELS_OFF = {**ENV, "BENCH_NATIVE": "0"}
ROUNDS = 5
KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
ENGINE = """
import sys, json, contextlib, io
mod = sys.argv[3]
if mod == "hotcoco":
    from hotcoco import COCO, COCOeval
elif mod == "ultrafast":
    from ultrafast_pycocotools import COCO, COCOeval
else:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
with contextlib.redirect_stdout(io.StringIO()):
    gt = COCO(sys.argv[1]); dt = gt.loadRes(sys.argv[2])
    ev = COCOeval(gt, dt, "bbox"); ev.evaluate(); ev.accumulate(); ev.summarize()
print(json.dumps([float(s) for s in ev.stats]))
"""
PROBLEMS = {"coco-val-shaped": {"n_images": 2000, "dets_per_image": 100, "seed": 0},
            "dense": {"n_images": 300, "dets_per_image": 1500, "seed": 1}}


def _timed(cmd: list[str], env: dict[str, str] = ENV) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    return time.perf_counter() - start, done.stdout


@pytest.mark.perf
@pytest.mark.parametrize("problem", sorted(PROBLEMS))
def test_evaluator_vs_engines(benchmark, problem: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    gt, dt = write_problem(tmp_path / "problem", n_classes=80, **PROBLEMS[problem])
    engine = [sys.executable, "-c", ENGINE, str(gt), str(dt)]
    ours = [sys.executable, "-m", "bench.evaluate", "--gt", str(gt), "--dt", str(dt)]
    commands = {"pycocotools": [*engine, "pycocotools"], "hotcoco": [*engine, "hotcoco"],
                "ultrafast": [*engine, "ultrafast"],
                "ours_coco_only": [*ours, "--out", str(tmp_path / "a"), "--protocols", "coco",
                                   "--bootstrap", "0", "--no-nwd", "--no-tide"],
                "ours_full": [*ours, "--out", str(tmp_path / "b")],
                "ours_full_numpy": [*ours, "--out", str(tmp_path / "c")]}
    envs = {"ours_full_numpy": KERNELS_OFF}
    # identical COCO numbers, once, before timing
    pycocotools_s, out = _timed(commands["pycocotools"])
    reference = json.loads(out)
    for name in ("hotcoco", "ultrafast"):
        assert json.loads(_timed(commands[name])[1]) == reference, name
    names = [name for name in commands if name != "pycocotools"]
    times: dict[str, list[float]] = {name: [] for name in names}
    turn = iter(range(ROUNDS))

    def one_round() -> None:
        shift = next(turn)
        for name in names[shift % len(names):] + names[:shift % len(names)]:
            times[name].append(_timed(commands[name], envs.get(name, ENV))[0])

    benchmark.pedantic(one_round, rounds=ROUNDS, iterations=1)
    best = {"pycocotools": pycocotools_s, **{name: statistics.median(v) for name, v in times.items()}}
    assert json.loads((tmp_path / "c" / "metrics.json").read_text())["engine"]["kernels"].startswith("NumPy")
    for out in ("a", "b", "c"):
        metrics = json.loads((tmp_path / out / "metrics.json").read_text())
        assert [metrics["coco"][k] if metrics["coco"][k] is not None else -1.0 for k in KEYS] == reference
    ratios = {name: best[name] / best["ultrafast"] for name in best}
    benchmark.extra_info.update({f"{k}_s": v for k, v in best.items()})
    benchmark.extra_info.update({f"{k}_ratio": v for k, v in ratios.items()})
    print(f"\n[{problem}] median of {ROUNDS} | "
          + " | ".join(f"{k} {v:.2f} s ({ratios[k]:.2f}x ultrafast)" for k, v in best.items())
          + f" | target ours_full <= 1.0x: {'met' if ratios['ours_full'] <= 1.0 else 'MISSED'}")

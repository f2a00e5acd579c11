"""The evaluator's speed against pycocotools on a COCO-val-shaped problem, each in its own process.

Reference: pycocotools' evaluate + accumulate + summarize alone (loading excluded). Ours: the whole
``python -m bench.evaluate`` process (interpreter start, imports, reading, COCO + VOC + curves + confusion,
writing). Target ratio: at most 0.5. Reported, not asserted (timings on shared machines are noisy); the COCO
numbers must be equal.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest
from coco_problem import write_problem

HERE = Path(__file__).resolve().parent
TARGET_RATIO = 0.5
KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


@pytest.mark.perf
def test_full_metric_set_vs_pycocotools(benchmark, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    gt, dt = write_problem(tmp_path / "problem", n_images=2000, n_classes=80, dets_per_image=100, seed=0)
    out = tmp_path / "out"

    def ours() -> float:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "bench.evaluate", "--gt", str(gt), "--dt", str(dt),
                        "--out", str(out)], check=True, capture_output=True)
        return time.perf_counter() - start

    ours_s = benchmark.pedantic(ours, rounds=1, iterations=1)
    # kB on Linux; the evaluator is the only child process so far
    peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024**2
    reference = subprocess.run([sys.executable, str(HERE / "coco_problem.py"), str(gt), str(dt)], check=True,
                               capture_output=True, text=True)
    pycocotools = json.loads(reference.stdout)
    ratio = ours_s / pycocotools["seconds"]
    benchmark.extra_info.update({"ours_s": ours_s, "pycocotools_s": pycocotools["seconds"], "ratio": ratio,
                                 "target_ratio": TARGET_RATIO, "peak_rss_gb": peak_gb})
    print(f"\nbench.evaluate (whole process) {ours_s:.2f} s | pycocotools evaluate+accumulate+summarize "
          f"{pycocotools['seconds']:.2f} s | ratio {ratio:.3f} (target <= {TARGET_RATIO}: "
          f"{'met' if ratio <= TARGET_RATIO else 'MISSED'}) | peak RSS {peak_gb:.2f} GB (limit 4)")

    metrics = json.loads((out / "metrics.json").read_text())
    assert [metrics["coco"][k] for k in KEYS] == pycocotools["stats"]
    assert peak_gb < 4

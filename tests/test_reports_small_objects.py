"""The "Small objects" section builds from a run directory's files alone."""

from __future__ import annotations

from pathlib import Path

import jinja2
import numpy as np

from bench.data.records import DetectionDataset, ImageRecord
from bench.metrics import DetectionResults, evaluate
from bench.metrics.small_objects import SmallObjectSettings
from reports.plots.small_objects import small_objects_section


def test_section_from_saved_metrics(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    records = [ImageRecord(i + 1, f"{i}.jpg", 200, 200, boxes=[[10, 10, 16, 16], [50, 50, 90, 90]],
                           labels=[0, 1]) for i in range(6)]
    ds = DetectionDataset(["a", "b"], records, tmp_path)
    boxes = np.concatenate([r.boxes for r in records]) + rng.normal(0, 1.0, (12, 4))
    dets = DetectionResults(np.repeat(np.arange(1, 7), 2), np.tile([0, 1], 6), boxes, rng.random(12))
    result = evaluate(ds, dets, small_objects=SmallObjectSettings(bootstrap=20))
    result.save(tmp_path / "models" / "m1")
    section = small_objects_section({"m1": tmp_path / "models" / "m1"}, tmp_path)
    assert section["available"] and section["figures"]["tide"] and section["figures"]["tolerance"]
    assert "AP_very_tiny" in section["tables"]["aitod"] and "[" in section["tables"]["coco"]
    template = Path(__file__).parents[1] / "reports" / "templates" / "small_objects.html.j2"
    html = jinja2.Template(template.read_text()).render(small_objects=section)
    assert "Small objects" in html and "small_objects_tide.png" in html
    assert (tmp_path / "small_objects_tolerance.png").stat().st_size > 1000

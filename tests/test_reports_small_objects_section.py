"""The "Small objects" section in both pages, from a run whose model was scored by the real evaluator."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from fixtures_report import make_fake_run

from bench.data.records import DetectionDataset, ImageRecord
from bench.metrics import DetectionResults, evaluate
from bench.metrics.bootstrap import paired_comparison
from bench.metrics.small_objects import SmallObjectSettings
from reports.build import main


def _scored_run(root: Path) -> Path:
    """The fake run with ssd300's metrics from ``bench.metrics.evaluate`` and a ``sliced.json``."""
    make_fake_run(root)
    rng = np.random.default_rng(0)
    records = [ImageRecord(i + 1, f"{i}.png", 200, 200, boxes=[[10, 10, 16, 16], [50, 50, 90, 90]],
                           labels=[0, 1]) for i in range(6)]
    ds = DetectionDataset(["a", "b"], records, root)
    truth = np.concatenate([r.boxes for r in records])

    def dets(noise: float) -> DetectionResults:
        return DetectionResults(np.repeat(np.arange(1, 7), 2), np.tile([0, 1], 6),
                                truth + rng.normal(0, noise, truth.shape), rng.random(12))

    settings = SmallObjectSettings(bootstrap=20)
    evaluate(ds, dets(1.0), small_objects=settings).save(root / "models" / "ssd300")
    only_aitod = SmallObjectSettings(protocols=("aitod",), nwd=False, tide=False, bootstrap=0)
    sliced = {"protocol": "aitod"}
    for mode, noise, inputs in (("full", 2.0, 1), ("sliced", 0.5, 4)):
        result = evaluate(ds, dets(noise), small_objects=only_aitod)
        sliced[mode] = {"stats": result.small_objects["protocols"]["aitod"]["stats"], "AP": result.coco["AP"],
                        "inputs_per_image": inputs, "ms_per_image": 12.5 * inputs}
    sliced["delta"] = {k: (None if v is None or sliced["full"]["stats"].get(k) is None
                           else v - sliced["full"]["stats"][k]) for k, v in sliced["sliced"]["stats"].items()}
    (root / "models" / "ssd300" / "sliced.json").write_text(json.dumps(sliced))
    better = {m: paired_comparison([0.30, 0.32, 0.31], [0.35, 0.36, 0.33], estimate_a=0.31, estimate_b=0.35)
              for m in ("AP", "AP50")}
    (root / "comparisons.json").write_text(json.dumps({  # as bench.runner.comparisons writes it
        "reference": "ssd300", "models": {"mfssd300": {"aitod": better},
                                          "fssd300": {"skipped": "scored on other test images"}}}))
    return root


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    root = _scored_run(tmp_path_factory.mktemp("run"))
    assert main([str(root)]) == 0
    return root, (root / "report.md").read_text(encoding="utf-8"), (root / "report.html").read_text("utf-8")


def test_markdown_section_has_buckets_tide_tolerance_and_slicing(pages):
    root, md, _ = pages
    section = md.split("## Small objects")[1].split("\n## ")[0]
    aitod = section.split("### aitod buckets")[1].split("###")[0]
    header = next(line for line in aitod.splitlines() if line.startswith("| model |"))
    assert "AP\\_very\\_tiny" in header and "AP\\_tiny" in header
    ssd = next(line for line in aitod.splitlines() if line.startswith("| ssd300 |"))
    assert re.search(r"\| \d+\.\d \\\[\d+\.\d, \d+\.\d\\\] \|", ssd)  # value [lo, hi], brackets escaped
    assert "### coco buckets" in section
    for name in ("tide", "tolerance"):
        assert f"](figures/small_objects_{name}.png)" in section
        assert (root / "figures" / f"small_objects_{name}.png").read_bytes()[:4] == b"\x89PNG"
    sliced = section.split("### Sliced against full-image inference")[1]
    rows = [line for line in sliced.splitlines() if line.startswith("| ssd300 |")]
    assert [r.split("|")[2].strip() for r in rows] == ["full", "sliced", "Δ (sliced - full)"]
    assert "| 4.0 | 50.0 |" in rows[1]  # inputs per image and ms per image of the sliced pass
    paired = section.split("### Paired comparison (aitod)")[1].split("###")[0]
    mfssd = next(line for line in paired.splitlines() if line.startswith("| mfssd300 | ssd300 |"))
    assert "| +4.0 \\[" in mfssd  # the difference of the estimates, 35 - 31 points, then its interval
    assert "- Not paired, scored on other test images: fssd300." in paired
    for block in re.findall(r"(?:^\|.*\|$\n?)+", section, flags=re.M):
        assert len({len(re.findall(r"(?<!\\)\|", line)) for line in block.strip().splitlines()}) == 1


def test_html_section_embeds_its_figures(pages):
    _, _, html = pages
    section = html.split('<section id="small-objects">')[1].split("</section>")[0]
    assert section.count('<img src="data:image/png;base64,') == 2
    assert not re.search(r'(src|href)="(?!data:|#)', html)  # the page stays one self-contained file
    assert "AP_very_tiny" in section and "Sliced against full-image inference" in section
    assert "Paired comparison (aitod)" in section and "<td>mfssd300</td>" in section

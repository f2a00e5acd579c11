"""The report builder on a small fake run: every section present, failures shown, data text made inert."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from fixtures_report import FAILED, HOSTILE_CLASS, NEVER_STARTED, PLAN_PARAMS_AT_20, make_fake_run

from reports.build import main
from reports.papers import ACCURACY_METRICS, compare, load_registry
from reports.rundir import load_run, measured_numbers, run_facts

SECTIONS = ["Reproduced without data", "Learnability and budget", "Summary (measured in this run)", "Models",
            "Paper vs reproduced", "Paper settings", "Accuracy", "Small objects", "Curves",
            "Confusion matrices", "Qualitative detections", "Speed", "Training", "Data health",
            "Data set statistics", "Environment"]
FIGURES = ["per_class_ap", "ap_by_size", "dfssd_small_classes", "yolo_family", "pr_per_class",
           "pr_yolo_vs_ssd", "roc", "class_percentages", "confusion_ssd300", "confusion_yolov5n",
           "qualitative_1", "fps", "speed_accuracy", "training", "class_counts", "box_shapes",
           "labels_correlogram"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = make_fake_run(tmp_path_factory.mktemp("run"))
    assert main([str(root), "--tolerance", "1.0"]) == 0
    return root


@pytest.fixture(scope="module")
def markdown(run_dir: Path) -> str:
    return (run_dir / "report.md").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def html(run_dir: Path) -> str:
    return (run_dir / "report.html").read_text(encoding="utf-8")


def test_sections_in_order(markdown: str, html: str):
    md_headings = re.findall(r"^## (.+)$", markdown, flags=re.M)
    assert md_headings == SECTIONS
    html_headings = re.findall(r"<h2[^>]*>(.+?)</h2>", html)
    assert html_headings == SECTIONS


def test_every_figure_is_drawn_and_linked(run_dir: Path, markdown: str, html: str):
    for name in FIGURES:
        png = run_dir / "figures" / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert f"](figures/{name}.png)" in markdown
    assert "Not applicable" not in markdown
    # Self-contained HTML: every image is embedded, nothing is fetched from anywhere.
    assert html.count('<img src="data:image/png;base64,') == len(FIGURES)
    assert not re.search(r'(src|href)="(?!data:|#)', html)


def test_hostile_class_name_is_text(markdown: str, html: str):
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert HOSTILE_CLASS not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in markdown
    assert HOSTILE_CLASS not in markdown


def test_banners_failed_and_missing_models(markdown: str, html: str):
    assert "Synthetic data: this run uses the generated embedded data set (synthetic-fake)" in html
    assert "Not the papers' training budget: 100 fake iterations" in markdown
    assert f"| {FAILED} | failed: FloatingPointError: loss is NaN |" in markdown
    never = "missing: listed in the suite but the run left no output directory"
    assert f"| {NEVER_STARTED} | {never} |" in markdown


def test_markdown_tables_are_well_formed(markdown: str):
    """Every row of a pipe table has as many unescaped cell separators as its header."""
    blocks = re.findall(r"(?:^\|.*\|$\n?)+", markdown, flags=re.M)
    assert len(blocks) > 10
    for block in blocks:
        counts = {len(re.findall(r"(?<!\\)\|", line)) for line in block.strip().splitlines()}
        assert len(counts) == 1, block[:300]


def test_paper_table_layout_on_synthetic_run(markdown: str):
    table2 = markdown.split("— Table II")[1].split("###")[0]
    header = next(line for line in table2.splitlines() if line.startswith("| paper row"))
    assert header.count("|") == 4 + 1 + 20 + 1 + 1  # 4 row labels, mAP, 20 classes, reason, closing
    assert "MFSSD-B | mfssd300\\_bn | 300 | 11,620 | — / 81.2 / — ∅" in table2  # paper shown, not run
    assert "| SSD | ssd300\\_11620 | 300 | 11,620 | — / 77.7 /" in table2  # the 11,620-prior retrain
    voc = markdown.split("— Results on PASCAL VOC2007 (text)")[1].split("###")[0]
    ssd = next(line for line in voc.splitlines() if line.startswith("| SSD300\\* | ssd300 |"))
    assert "41.0 / 77.5 / -36.5 ≠" in ssd  # run / paper / delta, not comparable
    assert "data: run evaluated on synthetic data (synthetic-fake), paper on VOC2007 test" in ssd


def test_report_leads_with_architecture_rows_at_the_papers_classes(markdown: str):
    """Table I at 21 classes whatever the run's 4 classes: the plan's counts at 20 object classes compare,
    even for a model whose training failed; the run's own 4-class count would not."""
    lead = markdown.split("## Reproduced without data")[1].split("\n## ")[0]
    table1 = lead.split("— Table I\n")[1].split("###")[0]
    mfssd = next(line for line in table1.splitlines() if line.startswith("| MFSSD | mfssd300 |"))
    count = f"{PLAN_PARAMS_AT_20[FAILED]:,}"
    assert f"{count} / {count} / +0 ✓" in mfssd and "at the paper's 20 classes" in mfssd
    table4 = lead.split("— Table IV\n")[1].splitlines()
    ssd_priors = next(line for line in table4 if line.startswith("| SSD |"))
    assert "8,732 / 8,732 / +0 ✓" in ssd_priors  # Table IV's prior count, from info.json
    assert "— Table II\n" not in lead and "— Table III\n" not in lead  # accuracy rows need data
    assert "| ssd300 | ssd | 300 | 8,732 |" in lead  # the parameter and FLOP table


def test_learnability_flags_models_below_their_budget(markdown: str):
    block = markdown.split("## Learnability and budget")[1].split("\n## ")[0]
    yolo = next(line for line in block.splitlines() if line.startswith("| yolov5n |"))
    assert "| 100 | 100 |" in yolo and "below the budget to learn" in yolo and "| 0.0 |" in yolo
    ssd = next(line for line in block.splitlines() if line.startswith("| ssd300 |"))
    assert ssd.rstrip().endswith("| learned |")
    assert f"| {FAILED} |" in block and "failed" in block.split(f"| {FAILED} |")[1].splitlines()[0]


def test_overrides_and_settings_come_from_the_plan(markdown: str):
    models = markdown.split("## Models")[1].split("\n## ")[0]
    ssd = next(line for line in models.splitlines() if line.startswith("| ssd300 |"))
    assert "family ssd: fake family reason (lr = 0.02)" in ssd
    settings = markdown.split("## Paper settings")[1].split("\n## ")[0]
    assert "| 001 | mfssd300 | lr | 0.4\\* |" in settings  # flagged: a possible reading
    assert "| 000 | yolov5n | batch\\_size | 128 | 8 |" in settings  # the info.json fallback (no plan value)


def test_no_accuracy_number_counts_as_reproduced_on_synthetic_data(run_dir: Path):
    run = load_run(run_dir)
    comparison = compare(load_registry(), measured_numbers(run), run_facts(run))
    accuracy = comparison[comparison["metric"].isin(ACCURACY_METRICS)]
    assert set(accuracy["status"]) <= {"not comparable", "missing", "reference"}
    assert (accuracy.loc[accuracy["model"] == "ssd300", "status"] == "not comparable").all()


def test_measured_numbers_follow_the_run_files(run_dir: Path):
    measured = measured_numbers(load_run(run_dir)).set_index(["model", "metric", "class"])["value"]
    assert measured[("ssd300", "voc07_map_11pt", "")] == pytest.approx(41.0)
    assert measured[("yolov5n", "params", "")] == 1_000_000
    speed = json.loads((run_dir / "models" / "ssd300" / "speed.json").read_text())
    assert measured[("ssd300", "fps", "")] == pytest.approx(speed["results"][0]["fps"])
    per_class = json.loads((run_dir / "models" / "ssd300" / "metrics.json").read_text())["per_class"]
    bottle = next(c for c in per_class if c["class"] == "bottle")
    assert measured[("ssd300", "voc07_ap_11pt", "bottle")] == pytest.approx(100 * bottle["voc_ap_11pt"])
    assert ("mfssd300", "voc07_map_11pt", "") not in measured.index  # failed: nothing invented


def test_both_protocols_stand_beside_the_paper(tmp_path: Path):
    """A paper-protocol run given with --compare: every cell shows paper, identical and paper protocol."""
    identical = make_fake_run(tmp_path / "identical", seed=0)
    paper = make_fake_run(tmp_path / "paper", seed=1, protocol="paper")
    metrics = json.loads((paper / "models" / "ssd300" / "metrics.json").read_text())
    metrics["voc"]["mAP_11pt"] = 0.70
    (paper / "models" / "ssd300" / "metrics.json").write_text(json.dumps(metrics))
    assert main([str(paper), "--compare", str(identical)]) == 0  # the order given does not matter
    markdown = (paper / "report.md").read_text(encoding="utf-8")
    protocols = "**identical** (suite fake\\_suite, run identical); **paper protocol** (suite fake\\_suite"
    assert protocols in markdown
    voc = markdown.split("— Results on PASCAL VOC2007 (text)")[1].split("###")[0]
    ssd = next(line for line in voc.splitlines() if line.startswith("| SSD300\\* | ssd300 |"))
    assert "paper 77.5 · identical 41.0 (-36.5) ≠ · paper protocol 70.0 (-7.5) ≠" in ssd
    assert "identical: data: run evaluated on synthetic data" in ssd
    ratios = markdown.split("— Table IV: FPS ratios")[1].split("###")[0]
    assert "| MFSSD-P (11,620) / MFFSD (11,620) | mfssd300\\_pruned / mfssd300 |" in ratios
    assert "paper 1.34\\* · identical — (—) ∅ · paper protocol — (—) ∅" in ratios  # MFFSD's label: flagged
    test_markdown_tables_are_well_formed(markdown)


def test_cli_bad_input_exits_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    assert main([str(tmp_path / "absent")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "manifest.json is missing" in err
    root = make_fake_run(tmp_path / "run")
    (root / "models" / "ssd300" / "metrics.json").write_text("{not json")
    assert main([str(root)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "ssd300/metrics.json: unreadable JSON" in err


@pytest.mark.slow  # 80 classes: the two 81x81 confusion figures alone take a few seconds
def test_report_from_the_evaluator_on_real_coco_fixture(shared_data: Path, tmp_path: Path):
    """Real COCO val2014 GT and cocoapi's fake detections through bench.metrics: the page carries the
    evaluator's numbers unchanged (pycocotools' published AP 50.46 shows as 50.5)."""
    import bench.data.coco as coco_reader
    import bench.metrics as metrics
    source = shared_data / "coco-val2014-100"
    expected = json.loads((source / "expected.json").read_text())["stats"]
    gt_json = json.loads((source / "instances_val2014_100.json").read_text())
    gt = coco_reader.read_coco(source / "instances_val2014_100.json")
    results = source / "instances_val2014_fakebbox100_results.json"
    detections = metrics.DetectionResults.from_coco_json(results, gt)
    root = make_fake_run(tmp_path / "run")
    metrics.evaluate(gt, detections, coco_gt=gt_json).save(root / "models" / "ssd300")
    shutil.rmtree(root / "models" / "yolov5n")  # now a suite model with no output: shown as missing
    (root / "data" / "test_gt.json").write_text(json.dumps(gt_json))
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["data"].update(name="coco-val2014-100", synthetic=False, classes=gt.classes,
                            splits={"train": 12, "test": 100})
    (root / "manifest.json").write_text(json.dumps(manifest))
    assert main([str(root)]) == 0
    markdown = (root / "report.md").read_text(encoding="utf-8")
    row = next(line for line in markdown.splitlines() if line.startswith("| ssd300 | done |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[4:10] == [f"{100 * expected[k]:.1f}" for k in ("AP", "AP50", "AP75", "APs", "APm", "APl")]
    assert "| yolov5n | missing:" in markdown
    assert "coco-val2014-100 (100 test images)" in markdown  # neither VOC2007 test nor a COCO split

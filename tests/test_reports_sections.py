"""Report sections wired from other parts of the suite, the test-set identity, escaping and bad input."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from fixtures_report import FAILED, make_fake_run

from reports.build import environments, main
from reports.health import data_health
from reports.papers import COMPARABLE_TEST_SETS, KITTI_VAL, TT100K_TEST, Tolerance, compare, load_registry
from reports.rundir import identify_test_set, load_run, measured_numbers, run_facts

VOC = ["aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
       "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor"]
KITTI = ["pedestrian", "motor_vehicle", "other"]
COCO80 = [f"c{i}" for i in range(80)]
TT45 = [f"t{i}" for i in range(45)]
PAYLOAD = "p <img onerror=alert(1)> [x](javascript:1) a|b *bold* line1\nline2"


def _edit(path: Path, change) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    change(data)
    path.write_text(json.dumps(data), encoding="utf-8")


@pytest.mark.parametrize(("data", "identity"), [
    ({"format": "voc", "classes": VOC, "splits": {"test": 4952}}, "VOC2007 test"),
    ({"format": "coco", "classes": list(reversed(VOC)), "splits": {"test": 4952}}, "VOC2007 test"),
    ({"format": "voc", "classes": VOC, "splits": {"test": 4951}, "name": "v"}, "v (4951 test images)"),
    ({"format": "coco", "classes": COCO80, "splits": {"test": 5000}}, "COCO val2017"),
    ({"format": "coco", "classes": COCO80, "splits": {"test": 20288}}, "COCO test-dev"),
    ({"format": "kitti", "classes": KITTI, "splits": {"test": 3769}}, KITTI_VAL),
    ({"format": "kitti", "classes": KITTI, "splits": {"test": 3768}, "name": "k"}, "k (3768 test images)"),
    ({"format": "kitti", "classes": ["Car", "Pedestrian", "Cyclist"], "splits": {"test": 3769}, "name": "k"},
     "k (3769 test images)"),
    ({"format": "coco", "classes": KITTI, "splits": {"test": 3769}, "name": "k"}, "k (3769 test images)"),
    ({"format": "tt100k", "classes": TT45, "splits": {"test": 3071}}, TT100K_TEST),
    ({"format": "tt100k", "classes": TT45[:44], "splits": {"test": 3071}, "name": "t"},
     "t (3071 test images)"),
    ({"format": "coco", "classes": TT45, "splits": {"test": 3071}, "name": "t"}, "t (3071 test images)"),
    ({"format": "coco", "classes": VOC, "splits": {"test": 4952}, "synthetic": True, "name": "s"},
     "synthetic data (s)"),
    ({"format": "coco", "classes": ["a"], "splits": {}, "name": "mine"}, "mine"),
    ({}, "unnamed data set"),
])
def test_identify_test_set_every_branch(data, identity):
    assert identify_test_set({"data": data}) == identity


def test_registry_test_sets_accept_the_identities():
    """Every paper test set the registry names has an accepted run identity (or none can ever compare)."""
    assert set(load_registry()["test_data"]) <= set(COMPARABLE_TEST_SETS)
    assert set(COMPARABLE_TEST_SETS["KITTI 2D object (3 merged classes)"]) == {KITTI_VAL}
    assert set(COMPARABLE_TEST_SETS["TT100K test"]) == {TT100K_TEST}


def _real_data_run(root: Path, fmt: str, classes: list[str], n_test: int, metrics: dict) -> Path:
    """The fake run turned into a paper-budget run on ``fmt`` with ssd512's metrics replaced."""
    make_fake_run(root)
    _edit(root / "manifest.json", lambda m: (
        m["data"].update(format=fmt, classes=classes, synthetic=False, name=fmt,
                         splits={"train": 1, "test": n_test}),
        m["budget"].update(paper_budget=True), m["suite"]["config"].update(models=["ssd512"])))
    source, target = root / "models" / "ssd300", root / "models" / "ssd512"
    source.rename(target)
    _edit(target / "info.json", lambda i: i.update(name="ssd512", input_size=512, priors=24564))
    _edit(target / "metrics.json", lambda m: m.update(metrics))
    return root


@pytest.mark.parametrize(("fmt", "classes", "n_test", "metrics", "table", "paper"), [
    ("kitti", KITTI, 3769, {"kitti": {"table3": {"mAP_11pt": 0.6215}}}, "Table 3", 62.1),
    ("tt100k", TT45, 3071, {"voc": {"mAP_11pt": 0.6865, "mAP_allpt": 0.7}}, "Results on TT100K (text)", 68.7),
])
def test_kitti_and_tt100k_rows_compare(tmp_path, fmt, classes, n_test, metrics, table, paper):
    run = load_run(_real_data_run(tmp_path / fmt, fmt, classes, n_test, metrics))
    measured = measured_numbers(run)
    metric = f"{fmt}_map"
    value = measured[(measured["model"] == "ssd512") & (measured["metric"] == metric)]["value"]
    assert value.tolist() == pytest.approx([62.15 if fmt == "kitti" else 68.65])
    out = compare(load_registry(), measured, run_facts(run), Tolerance())
    row = out[(out["table"] == table) & (out["model"] == "ssd512") & (out["metric"] == metric)].iloc[0]
    assert row["value"] == paper and row["status"] == "reproduced", row["reason"]
    if fmt == "kitti":
        assert "3,712/3,769 split" in row["reason"] and "test labels are private" in row["reason"]
    other_metric = "tt100k_map" if fmt == "kitti" else "kitti_map"
    other = out[(out["metric"] == other_metric) & (out["model"] == "ssd512")]
    assert (other["status"] == "not comparable").all()  # a KITTI run never counts for TT100K, and back


@pytest.fixture(scope="module")
def edited(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """One report of the fake run with hostile text in a note, an error line, the data set's name, an override
    reason and data-health entries, and a training stage the wall-clock cap stopped: (markdown, html)."""
    root = make_fake_run(tmp_path_factory.mktemp("edited"))
    _edit(root / "models" / "ssd300" / "info.json", lambda i: i.update(notes=[PAYLOAD]))
    _edit(root / "models" / FAILED / "status.json", lambda s: s.update(error=f"ValueError: {PAYLOAD}"))
    _edit(root / "plan.json", lambda p: p["models"]["ssd300"]["overrides"][0].update(reason=PAYLOAD))

    def manifest(m: dict) -> None:
        m["data"].update(name=PAYLOAD)
        m["data_health"]["splits"][0]["findings"][0].update(examples=["<b>annotation 918</b>", "x|y"])

    _edit(root / "manifest.json", manifest)
    stages = [{"stage": "sparse", "iterations": 30, "planned_iterations": 30, "stopped_by_time": False},
              {"stage": "finetune", "iterations": 12, "planned_iterations": 50, "stopped_by_time": True}]
    _edit(root / "models" / "ssd300" / "status.json", lambda s: s.update(training=stages))
    assert main([str(root)]) == 0
    return tuple((root / name).read_text(encoding="utf-8") for name in ("report.md", "report.html"))


def test_report_makes_data_text_inert(edited: tuple[str, str]):
    """HTML, a Markdown link, a pipe, emphasis and a newline in a note, an error line, the data set's name
    and an override reason: none of it acts in report.md or report.html."""
    md, html = edited
    escaped = "p &lt;img onerror=alert(1)&gt; \\[x\\](javascript:1) a\\|b \\*bold\\* line1 line2"
    models = md.split("## Models")[1].split("\n## ")[0]
    ssd = next(line for line in models.splitlines() if line.startswith("| ssd300 |"))
    failed = next(line for line in models.splitlines() if line.startswith(f"| {FAILED} |"))
    header = next(line for line in md.splitlines() if line.startswith("- **Data:**"))
    assert ssd.count(escaped) == 2  # the note and the family override's reason
    assert escaped in failed and escaped in header
    assert "<img" not in md and "[x](javascript" not in md
    assert not re.search(r"(?<!\\)\*bold", md) and not re.search(r"^line2", md, flags=re.M)
    for block in re.findall(r"(?:^\|.*\|$\n?)+", md, flags=re.M):  # no bare pipe splits a cell
        assert len({len(re.findall(r"(?<!\\)\|", line)) for line in block.strip().splitlines()}) == 1
    assert "<img onerror" not in html and 'href="javascript' not in html
    assert html.count("p &lt;img onerror=alert(1)&gt; [x](javascript:1) a|b *bold* line1") >= 4


def test_data_health_section(edited: tuple[str, str]):
    md, html = edited
    health = md.split("## Data health")[1].split("\n## ")[0]
    line = ("- train: 2 boxes with zero height dropped from training "
            "(&lt;b&gt;annotation 918&lt;/b&gt;, x\\|y)")
    assert line in health  # the runner's console line, escaped
    assert "| zero\\_height | boxes with zero height | dropped from training | 2 |" in health
    assert "- 3 objects of classes outside the suite left out" in health
    assert "### test (test; reference pycocotools; 6 images, 20 boxes)" in health
    assert "No quality problem found." in health.split("### test")[1]
    section = html.split('<h2 id="health">')[1].split("<h2")[0]
    assert "<td>&lt;b&gt;annotation 918&lt;/b&gt;, x|y</td>" in section
    assert "<code>partly_outside</code>" in section


def test_data_health_absent_says_so():
    view = data_health({"data": {}}, Path("manifest.json"))
    text = environments()[1].get_template("data_health.md.j2").render(data_health=view)
    assert not view.available and "has no `data_health` record" in text


def test_stage_stopped_by_the_wall_clock_cap_is_loud(edited: tuple[str, str]):
    md, _ = edited
    assert "**Budget not completed: the wall-clock safety cap stopped ssd300 (finetune)" in md
    block = md.split("## Learnability and budget")[1].split("\n## ")[0]
    row = next(line for line in block.splitlines() if line.startswith("| ssd300 |"))
    assert "| 80 | 42 | sparse 30 / 30; finetune 12 / 50 (STOPPED by the wall-clock cap) |" in row
    assert "⚠ BUDGET NOT COMPLETED (stopped by the wall-clock safety cap)" in row
    yolo = next(line for line in block.splitlines() if line.startswith("| yolov5n |"))
    assert "BUDGET" not in yolo and "| train 100 / 100 |" in yolo


@pytest.mark.parametrize(("damage", "where", "field"), [
    (lambda r: (r / "models/ssd300/pr_curves.csv").write_bytes(b"class,iou\n\xff\xfe,\x00\n"),
     "ssd300/pr_curves.csv", None),
    (lambda r: (r / "models/ssd300/roc_curves.csv").write_text('class,fppi,miss_rate\n"a,1,2\n'),
     "ssd300/roc_curves.csv", None),
    (lambda r: (r / "models/ssd300/pr_curves.csv").write_text("class,iou,recall,score\na,0.5,0.1,0.9\n"),
     "ssd300/pr_curves.csv", "precision"),
    (lambda r: (r / "manifest.json").write_text("[1, 2]"), "manifest.json", "(top level)"),
    (lambda r: _edit(r / "manifest.json", lambda m: m.update(data=["coco"])), "manifest.json", "data"),
    (lambda r: _edit(r / "manifest.json", lambda m: m["data_health"]["splits"][1].pop("role")),
     "manifest.json", "data_health.splits[1].role"),
    (lambda r: _edit(r / "manifest.json", lambda m: m["data_health"]["splits"][0]["findings"][0].update(
        count="2")), "manifest.json", "data_health.splits[0].findings[0].count"),
])
def test_bad_run_files_exit_2_naming_path_and_field(tmp_path, capsys, damage, where, field):
    root = make_fake_run(tmp_path / "run")
    damage(root)
    assert main([str(root)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and where in err, err
    if field is not None:
        assert f"field '{field}'" in err, err
    else:
        assert "unreadable CSV" in err, err


def test_reports_never_import_torch():
    code = "import sys, reports.build, reports.figures; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"

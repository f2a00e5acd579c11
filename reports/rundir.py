"""Read a run directory (the contract written by ``bench.run``) into plain Python and pandas objects.

The report is rebuilt from the run directory alone, and a run may be half-finished or have failed models,
so every per-model file is optional: what is absent is recorded as absent, never invented.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

# Light modules (no torch): the one definition of the VOC class list and of pycocotools' summary keys.
from bench.data.voc import VOC_CLASSES
from bench.errors import BenchInputError
from bench.io import read_json as _read_json
from bench.metrics.coco import SUMMARY_KEYS as COCO_METRICS
from reports.papers import DFSSD_SMALL_CLASSES, KITTI_VAL, TT100K_TEST, ModelFacts, RunFacts

VOC07_TEST_IMAGES = 4952
COCO_VAL2017_IMAGES = 5000
COCO_TEST_DEV_IMAGES = 20288
KITTI_VAL_IMAGES = 3769  # the common 3,712/3,769 split of KITTI's 7,481 labelled training images
KITTI_MERGED_CLASSES = ("pedestrian", "motor_vehicle", "other")  # DF-SSD's merge (bench/suites/kitti.toml)
TT100K_TEST_IMAGES = 3071
TT100K_CLASSES = 45  # Zhu et al.'s classes with at least 100 training instances


@dataclass
class ModelRun:
    """Everything one model left in ``models/<name>/``; ``None`` where the file is absent."""

    name: str
    state: str  # "done" | "failed" | "pending" | "running" | "missing" (no directory at all)
    stage: str | None = None
    error: str | None = None
    info: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] | None = None
    pr_curves: pd.DataFrame | None = None
    roc_curves: pd.DataFrame | None = None
    confusion: dict[str, Any] | None = None
    speed: dict[str, Any] | None = None
    complexity: dict[str, Any] | None = None
    train_log: pd.DataFrame | None = None
    training: list[dict[str, Any]] = field(default_factory=list)  # per stage: iterations actually trained

    @property
    def params(self) -> int | None:
        return (self.complexity or {}).get("params", self.info.get("params"))

    @property
    def trained_iterations(self) -> int | None:
        """Iterations trained over all of the model's stages (``None`` before any stage finished)."""
        return sum(int(s["iterations"]) for s in self.training) if self.training else None

    @property
    def untrained(self) -> bool:
        """Its stages trained no iteration (a smoke budget of 0): its detections are those of an initialised
        network, so the per-model figures leave it out (its files keep every number)."""
        return self.trained_iterations == 0

    @property
    def scored_images(self) -> int | None:
        """Test images its detections were scored on (``metrics.json``; a smoke budget scores the first N)."""
        return ((self.metrics or {}).get("settings") or {}).get("n_images")

    def speed_result(self, protocol: str, precision: str = "fp32") -> dict[str, Any] | None:
        """The first timing of ``protocol`` at ``precision`` (the runner writes one per pair)."""
        for result in (self.speed or {}).get("results", []):
            if result.get("protocol") == protocol and result.get("precision") == precision:
                return result
        return None


@dataclass
class Run:
    root: Path
    manifest: dict[str, Any]
    models: dict[str, ModelRun]  # suite order, then any extra directories
    train_gt: dict[str, Any] | None
    test_gt: dict[str, Any] | None

    @property
    def classes(self) -> list[str]:
        return list(self.manifest.get("data", {}).get("classes") or [])

    @property
    def zoo(self) -> list[dict[str, Any]]:
        """Every registered model at run time (``manifest.zoo``: name, family, input size), registry order.

        Runs written before the manifest carried it know only their own models."""
        return list(self.manifest.get("zoo") or [{"name": name} for name in self.models])


def read_json(path: Path) -> Any:
    """``bench.io.read_json`` with the report's wording."""
    try:
        return _read_json(path)
    except BenchInputError as err:
        raise BenchInputError(path, f"unreadable JSON: {err.detail}") from None


def _optional_json(path: Path) -> Any:
    return read_json(path) if path.is_file() else None


# Columns the report reads from each per-model CSV (bench.metrics.result's PR/ROC columns, the train log's).
CSV_COLUMNS = {"pr_curves.csv": ("class", "iou", "recall", "precision", "score"),
               "roc_curves.csv": ("class", "fppi", "miss_rate"),
               "train_log.csv": ("stage", "iteration", "loss")}


def _optional_csv(path: Path) -> pd.DataFrame | None:
    """The CSV at ``path`` (``None`` when absent); unreadable files and missing columns are named errors."""
    if not path.is_file():
        return None
    try:
        frame = pd.read_csv(path, encoding="utf-8")
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        detail = " ".join(str(err).split())  # one line, whatever the parser said
        raise BenchInputError(path, f"unreadable CSV: {detail}") from None
    for column in CSV_COLUMNS.get(path.name, ()):
        if column not in frame.columns:
            raise BenchInputError(path, f"missing column (columns: {', '.join(map(str, frame.columns))})",
                                  field=column)
    return frame


MANIFEST_OBJECTS = ("suite", "data", "budget", "device", "git", "versions", "data_health")
MANIFEST_OPTIONAL = frozenset({"git", "versions", "data_health"})  # may be null (e.g. no git checkout)


def suite_models(manifest: dict[str, Any]) -> list[str]:
    """Model names in suite order from ``manifest.suite.config.models`` (a list of names or tables)."""
    models = manifest.get("suite", {}).get("config", {}).get("models", [])
    if isinstance(models, dict):
        return list(models)
    return [m if isinstance(m, str) else m.get("name", "") for m in models if m]


def _load_model(directory: Path, name: str) -> ModelRun:
    if not directory.is_dir():
        return ModelRun(name, "missing", error="listed in the suite but the run left no output directory")
    status = _optional_json(directory / "status.json") or {}
    error = status.get("error")
    error_file = directory / "error.txt"
    if not error and error_file.is_file():  # the exception line closes the traceback
        lines = error_file.read_text(encoding="utf-8", errors="replace").strip().splitlines()
        error = lines[-1] if lines else None
    return ModelRun(
        name=name,
        state=status.get("state", "pending"),
        stage=status.get("stage"),
        error=error,
        info=_optional_json(directory / "info.json") or {},
        metrics=_optional_json(directory / "metrics.json"),
        pr_curves=_optional_csv(directory / "pr_curves.csv"),
        roc_curves=_optional_csv(directory / "roc_curves.csv"),
        confusion=_optional_json(directory / "confusion.json"),
        speed=_optional_json(directory / "speed.json"),
        complexity=_optional_json(directory / "complexity.json"),
        train_log=_optional_csv(directory / "train_log.csv"),
        training=list(status.get("training") or []),
    )


def load_run(root: Path) -> Run:
    """Load ``root``; raises ``BenchInputError`` when it is not a run directory or a file is corrupt."""
    root = Path(root)
    manifest_path = root / "manifest.json"
    if not manifest_path.is_file():
        raise BenchInputError(root, "not a run directory: manifest.json is missing")
    manifest = read_json(manifest_path)
    if not isinstance(manifest, dict):
        raise BenchInputError(manifest_path, f"must be a JSON object, got {type(manifest).__name__}",
                              field="(top level)")
    for key in MANIFEST_OBJECTS:
        if key in manifest and not isinstance(manifest[key], dict) and not (
                manifest[key] is None and key in MANIFEST_OPTIONAL):
            raise BenchInputError(manifest_path, f"must be an object, got {type(manifest[key]).__name__}",
                                  field=key)
    models_dir = root / "models"
    extra = sorted(p.name for p in models_dir.iterdir() if p.is_dir()) if models_dir.is_dir() else []
    names = list(dict.fromkeys([*suite_models(manifest), *extra]))
    models = {name: _load_model(models_dir / name, name) for name in names}
    data = root / "data"
    train_gt, test_gt = (_optional_json(data / f"{split}_gt.json") for split in ("train", "test"))
    return Run(root, manifest, models, train_gt, test_gt)


def identify_test_set(manifest: dict[str, Any]) -> str:
    """Name the run's test split in the paper registry's vocabulary ("VOC2007 test", "COCO val2017"...).

    Identified by format, classes and image count only (the names a user gives a folder prove nothing); the
    paper registry's ``COMPARABLE_TEST_SETS`` then says which papers' test sets each identity stands for."""
    data = manifest.get("data", {})
    name = str(data.get("name") or "unnamed data set")
    if data.get("synthetic"):
        return f"synthetic data ({name})"
    classes = list(data.get("classes") or [])
    n_test = (data.get("splits") or {}).get("test")
    fmt = data.get("format")
    if sorted(classes) == sorted(VOC_CLASSES) and n_test == VOC07_TEST_IMAGES:
        return "VOC2007 test"
    if fmt == "kitti" and classes == list(KITTI_MERGED_CLASSES) and n_test == KITTI_VAL_IMAGES:
        return KITTI_VAL
    if fmt == "tt100k" and len(classes) == TT100K_CLASSES and n_test == TT100K_TEST_IMAGES:
        return TT100K_TEST
    if len(classes) == 80 and n_test == COCO_VAL2017_IMAGES:
        return "COCO val2017"
    if len(classes) == 80 and n_test == COCO_TEST_DEV_IMAGES:
        return "COCO test-dev"
    return f"{name} ({n_test} test images)" if n_test else name


def run_facts(run: Run) -> RunFacts:
    budget = run.manifest.get("budget", {})
    models = {
        name: ModelFacts(state=m.state, input_size=m.info.get("input_size"), priors=m.info.get("priors"),
                         num_classes=m.info.get("num_classes"), error=m.error)
        for name, m in run.models.items()
    }
    return RunFacts(test_data=identify_test_set(run.manifest),
                    synthetic=bool(run.manifest.get("data", {}).get("synthetic")),
                    paper_budget=bool(budget.get("paper_budget")),
                    budget_description=str(budget.get("description") or ""),
                    device_name=str(run.manifest.get("device", {}).get("name") or ""),
                    models=models, zoo=frozenset(e["name"] for e in run.zoo) | frozenset(run.models))


def _percent(value: Any) -> float | None:
    return None if value is None or value < 0 else 100.0 * float(value)


def measured_numbers(run: Run) -> pd.DataFrame:
    """The run's numbers in the paper registry's vocabulary: columns model, metric, class, value."""
    rows: list[tuple[str, str, str, float | None]] = []
    fmt = run.manifest.get("data", {}).get("format")
    for name, model in run.models.items():
        metrics = model.metrics or {}
        voc_map = _percent((metrics.get("voc") or {}).get("mAP_11pt"))
        rows.append((name, "voc07_map_11pt", "", voc_map))
        if fmt == "tt100k":  # MDSSD's TT100K mAP: the devkit's, over the 45 classes the run evaluates
            rows.append((name, "tt100k_map", "", voc_map))
        table3 = ((metrics.get("kitti") or {}).get("table3") or {}).get("mAP_11pt")
        rows.append((name, "kitti_map", "", _percent(table3)))  # DF-SSD Table 3: DontCare as ignore regions
        rows += [(name, f"coco_{k}", "", _percent((metrics.get("coco") or {}).get(k))) for k in COCO_METRICS]
        per_class = {c["class"]: _percent(c.get("voc_ap_11pt")) for c in metrics.get("per_class", [])}
        rows += [(name, "voc07_ap_11pt", cls, ap) for cls, ap in per_class.items()]
        small = [per_class.get(cls) for cls in DFSSD_SMALL_CLASSES]
        if all(ap is not None for ap in small):
            rows.append((name, "voc07_small6_mean_ap", "", sum(small) / len(small)))
        if model.params is not None:
            rows.append((name, "params", "", float(model.params)))
            rows.append((name, "size_mb", "", model.params * 4 / 2**20))
        if model.info.get("priors") is not None:
            rows.append((name, "priors", "", float(model.info["priors"])))
        timing = model.speed_result("model")
        if timing and timing.get("batch", 1) == 1:
            rows.append((name, "fps", "", float(timing["fps"])))
        start = (model.info.get("plan") or {}).get("params_at_start")
        if model.params and start and start != model.params:  # a plan that prunes: share of the start's size
            rows.append((name, "params_kept", "", 100.0 * model.params / start))
    frame = pd.DataFrame(rows, columns=["model", "metric", "class", "value"])
    return frame.dropna(subset=["value"]).reset_index(drop=True)

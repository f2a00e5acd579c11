"""Read a run directory (the contract written by ``bench.run``) into plain Python and pandas objects.

The report is rebuilt from the run directory alone, and a run may be half-finished or have failed models,
so every per-model file is optional: what is absent is recorded as absent, never invented.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from bench.errors import BenchInputError
from reports.papers import COCO_METRICS, DFSSD_SMALL_CLASSES, VOC_CLASSES, ModelFacts, RunFacts

# The zoo's model names (detectors.registry); listed here so the report needs no model code.
ZOO = ("ssd300", "ssd512", "fssd300", "mfssd300", "mfssd300_bn", "mfssd300_pruned", "mdssd300", "mdssd512",
       "dfssd300", "dfssd512", "yolov5n", "yolov5s", "yolov5m", "yolov5l", "yolov5x")
VOC07_TEST_IMAGES = 4952
COCO_VAL2017_IMAGES = 5000
COCO_TEST_DEV_IMAGES = 20288


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

    @property
    def params(self) -> int | None:
        return (self.complexity or {}).get("params", self.info.get("params"))

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


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BenchInputError(path, f"unreadable JSON: {err}") from err


def _optional_json(path: Path) -> Any:
    return read_json(path) if path.is_file() else None


def _optional_csv(path: Path) -> pd.DataFrame | None:
    if not path.is_file():
        return None
    try:
        return pd.read_csv(path)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise BenchInputError(path, f"unreadable CSV: {err}") from err


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
    )


def load_run(root: Path) -> Run:
    """Load ``root``; raises ``BenchInputError`` when it is not a run directory or a file is corrupt."""
    root = Path(root)
    manifest_path = root / "manifest.json"
    if not manifest_path.is_file():
        raise BenchInputError(root, "not a run directory: manifest.json is missing")
    manifest = read_json(manifest_path)
    if not isinstance(manifest, dict):
        raise BenchInputError(manifest_path, "the manifest must be a JSON object")
    models_dir = root / "models"
    extra = sorted(p.name for p in models_dir.iterdir() if p.is_dir()) if models_dir.is_dir() else []
    names = list(dict.fromkeys([*suite_models(manifest), *extra]))
    models = {name: _load_model(models_dir / name, name) for name in names}
    data = root / "data"
    train_gt, test_gt = (_optional_json(data / f"{split}_gt.json") for split in ("train", "test"))
    return Run(root, manifest, models, train_gt, test_gt)


def test_data_identity(manifest: dict[str, Any]) -> str:
    """Name the run's test split in the paper registry's vocabulary ("VOC2007 test", "COCO val2017"...)."""
    data = manifest.get("data", {})
    name = str(data.get("name") or "unnamed data set")
    if data.get("synthetic"):
        return f"synthetic data ({name})"
    classes = list(data.get("classes") or [])
    n_test = (data.get("splits") or {}).get("test")
    if sorted(classes) == sorted(VOC_CLASSES) and n_test == VOC07_TEST_IMAGES:
        return "VOC2007 test"
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
    return RunFacts(test_data=test_data_identity(run.manifest),
                    synthetic=bool(run.manifest.get("data", {}).get("synthetic")),
                    paper_budget=bool(budget.get("paper_budget")),
                    budget_description=str(budget.get("description") or ""),
                    device_name=str(run.manifest.get("device", {}).get("name") or ""),
                    models=models, zoo=frozenset(ZOO) | frozenset(run.models))


def _percent(value: Any) -> float | None:
    return None if value is None or value < 0 else 100.0 * float(value)


def measured_numbers(run: Run) -> pd.DataFrame:
    """The run's numbers in the paper registry's vocabulary: columns model, metric, class, value."""
    rows: list[tuple[str, str, str, float | None]] = []
    for name, model in run.models.items():
        metrics = model.metrics or {}
        rows.append((name, "voc07_map_11pt", "", _percent((metrics.get("voc") or {}).get("mAP_11pt"))))
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
    pruned, unpruned = run.models.get("mfssd300_pruned"), run.models.get("mfssd300_bn")
    if pruned and unpruned and pruned.params and unpruned.params:
        rows.append(("mfssd300_pruned", "params_kept", "", 100.0 * pruned.params / unpruned.params))
    frame = pd.DataFrame(rows, columns=["model", "metric", "class", "value"])
    return frame.dropna(subset=["value"]).reset_index(drop=True)

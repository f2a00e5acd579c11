"""The evaluator's one result object, its JSON-safe dict, and the files it writes and reads back.

Files in the output folder:

* ``metrics.json``: ``coco``, ``voc``, ``per_class``, ``engine``, ``settings``, ``roc_definition``, ``files``;
* ``pr_curves.csv``: ``class, iou, recall, precision, score`` (COCO's 101-point interpolated curves);
* ``roc_curves.csv``: ``class, fppi, miss_rate, score`` (see :data:`ROC_DEFINITION`);
* ``confusion.json``: classes (with ``background``), raw and row-normalised matrices, thresholds, definition.

Undefined numbers (a class without ground truth, pycocotools' ``-1``) are NaN in memory and ``null`` in JSON.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.io import json_bytes, json_safe
from bench.metrics.confusion import DEFINITION as CONFUSION_DEFINITION
from bench.metrics.confusion import ConfusionMatrix
from bench.metrics.parallel import run_beside

PR_DEFINITION = ("per class, pycocotools' interpolated precision at the 101 recall thresholds 0:0.01:1 "
                 "(area all, maxDets 100) and the detection score reached there; AP50/AP75 are their means")
ROC_DEFINITION = ("per class, detections swept over the score threshold in descending order (one point per "
                  "distinct score): miss rate = 1 - recall at IoU 0.5 (VOC devkit matching, difficult and "
                  "crowd boxes ignored) versus false positives per image (false positives / images)")
PR_COLUMNS = ("class", "iou", "recall", "precision", "score")
ROC_COLUMNS = ("class", "fppi", "miss_rate", "score")


@dataclass
class Curves:
    """Curves as columns: ``label`` (class index) plus float columns named as in the CSV."""

    label: np.ndarray
    columns: dict[str, np.ndarray]  # (curves are not changed once built: their text is kept)
    _text: dict = field(default_factory=dict, repr=False, compare=False)  # csv_text per (classes, names)

    def csv_text(self, classes: list[str], names: tuple[str, ...]) -> str:
        """The ``csv`` module's text (its quoting of class names, ``repr`` floats, ``\r\n``), built as one
        string, each distinct float (by its bits: -0.0 stays -0.0) formatted once: curves repeat few values
        (scores, counts over a fixed denominator), so this is 2x faster than formatting every cell. Kept once
        built: the evaluator builds the ROC text in its side process, beside the matching."""
        key = (tuple(classes), names)
        if key in self._text:
            return self._text[key]

        def row(values: list[Any] | tuple[Any, ...]) -> str:
            buffer = io.StringIO()
            csv.writer(buffer).writerow(values)
            return buffer.getvalue()

        quoted = np.asarray([row([c])[:-2] for c in classes], dtype=object)  # each name as csv writes it
        columns = [quoted[self.label].tolist() if len(self.label) else []]
        for name in names[1:]:
            bits, where = np.unique(np.ascontiguousarray(self.columns[name], dtype=np.float64).view(np.int64),
                                    return_inverse=True)
            text = np.asarray([repr(v) for v in bits.view(np.float64).tolist()], dtype=object)
            columns.append(text[where.reshape(-1)].tolist())
        body = "".join(map((",".join(["{}"] * len(names)) + "\r\n").format, *columns))
        self._text[key] = row(names) + body
        return self._text[key]

    def write_csv(self, path: Path, classes: list[str], names: tuple[str, ...]) -> None:
        with path.open("w", newline="", encoding="utf-8") as f:
            f.write(self.csv_text(classes, names))

    @classmethod
    def read_csv(cls, path: Path, classes: list[str], names: tuple[str, ...]) -> Curves:
        with path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))[1:]
        index = {name: i for i, name in enumerate(classes)}
        label = np.array([index[r[0]] for r in rows], dtype=np.int64)
        values = np.array([r[1:] for r in rows], dtype=np.float64).reshape(len(rows), len(names) - 1)
        return cls(label, {n: values[:, i] for i, n in enumerate(names[1:])})


@dataclass
class EvaluationResult:
    """Every number the evaluator produces for one (ground truth, detections) pair."""

    classes: list[str]
    coco: dict[str, float]  # AP AP50 AP75 APs APm APl AR1 AR10 AR100 ARs ARm ARl
    voc: dict[str, float]  # mAP_11pt, mAP_allpt at IoU 0.5
    per_class: list[dict[str, Any]]
    pr_curves: Curves
    roc_curves: Curves
    confusion: ConfusionMatrix
    engine: dict[str, str] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    # size-bucket protocols, tolerance curves, TIDE, bootstrap intervals (bench.metrics.small_objects)
    small_objects: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The content of ``metrics.json`` (without ``files``), NaN written as ``None``; the bootstrap's
        per-resample values go to ``bootstrap.json`` instead (see :meth:`save`)."""
        return json_safe(self._content())

    def _content(self) -> dict[str, Any]:
        return {"coco": self.coco, "voc": self.voc, "per_class": self.per_class,
                "small_objects": _without_samples(self.small_objects), "engine": self.engine,
                "settings": self.settings, "roc_definition": ROC_DEFINITION, "pr_definition": PR_DEFINITION}

    def save(self, out_dir: str | Path) -> Path:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        curves = run_beside(self._write_curves, out)  # the CSVs (most of the writing) beside the JSON files
        matrix = self.confusion
        confusion = {"classes": matrix.classes, "matrix": matrix.matrix.tolist(),
                     "normalized": matrix.normalized.tolist(), "score_thresh": matrix.score_thresh,
                     "iou_thresh": matrix.iou_thresh, "definition": CONFUSION_DEFINITION}
        _write_json(out / "confusion.json", confusion)
        metrics = self._content()  # json_bytes unwraps NumPy values and NaN itself
        metrics["files"] = {"pr_curves": "pr_curves.csv", "roc_curves": "roc_curves.csv",
                            "confusion": "confusion.json"}
        samples = bootstrap_samples(self.small_objects)
        if samples:
            definition = ("per-resample values; resample r of every model on the same images and seed is the "
                          "same draw")
            _write_json(out / "bootstrap.json", {"definition": definition, "samples": samples,
                                                 "estimates": bootstrap_estimates(self.small_objects),
                                                 **self.small_objects.get("bootstrap", {})})
            metrics["files"]["bootstrap"] = "bootstrap.json"
        _write_json(out / "metrics.json", metrics)
        curves()
        return out

    def _write_curves(self, out: Path) -> None:
        self.pr_curves.write_csv(out / "pr_curves.csv", self.classes, PR_COLUMNS)
        self.roc_curves.write_csv(out / "roc_curves.csv", self.classes, ROC_COLUMNS)


def load_result(out_dir: str | Path) -> EvaluationResult:
    """Read back what :meth:`EvaluationResult.save` wrote (``null`` becomes NaN again)."""
    out = Path(out_dir)
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    confusion = json.loads((out / "confusion.json").read_text(encoding="utf-8"))
    classes = [c["class"] for c in metrics["per_class"]]
    return EvaluationResult(
        classes=classes,
        coco=_nan_for_none(metrics["coco"]),
        voc=_nan_for_none(metrics["voc"]),
        per_class=[_nan_for_none(c) for c in metrics["per_class"]],
        pr_curves=Curves.read_csv(out / metrics["files"]["pr_curves"], classes, PR_COLUMNS),
        roc_curves=Curves.read_csv(out / metrics["files"]["roc_curves"], classes, ROC_COLUMNS),
        confusion=ConfusionMatrix(confusion["classes"], np.asarray(confusion["matrix"], dtype=np.int64),
                                  confusion["score_thresh"], confusion["iou_thresh"]),
        engine=metrics["engine"],
        settings=metrics["settings"],
        small_objects=metrics.get("small_objects", {}),
    )


def _without_samples(small: dict[str, Any]) -> dict[str, Any]:
    out = dict(small)
    if "protocols" in small:
        out["protocols"] = {
            name: {**entry, "intervals": {k: {f: v for f, v in iv.items() if f != "samples"}
                                          for k, iv in entry["intervals"].items()}}
            if "intervals" in entry else entry for name, entry in small["protocols"].items()}
    return out


def bootstrap_samples(small: dict[str, Any]) -> dict[str, dict[str, list[float]]]:
    """``{protocol: {metric: per-resample values}}`` of a ``small_objects`` section."""
    return {name: {k: iv["samples"] for k, iv in entry["intervals"].items() if "samples" in iv}
            for name, entry in small.get("protocols", {}).items() if "intervals" in entry}


def bootstrap_estimates(small: dict[str, Any]) -> dict[str, dict[str, float]]:
    """``{protocol: {metric: estimate}}``: the statistic on the data itself, for basic intervals of paired
    differences (``bench.metrics.bootstrap.paired_comparison``'s ``estimate_a`` / ``estimate_b``)."""
    return {name: {k: iv["estimate"] for k, iv in entry["intervals"].items() if "estimate" in iv}
            for name, entry in small.get("protocols", {}).items() if "intervals" in entry}


def _nan_for_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: float("nan") if v is None else v for k, v in d.items()}


def _write_json(path: Path, data: Any) -> None:
    path.write_bytes(json_bytes(data))

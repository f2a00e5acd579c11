"""The "Small objects" section: per-bucket AP with intervals, TIDE bars per bucket, tolerance curves and
sliced against full-image inference, all read from each model's ``metrics.json`` (``small_objects``) and
``sliced.json`` in the run directory. No torch here: reports only read files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from reports.plots.style import NotApplicable, save


def read_small_objects(model_dirs: dict[str, Path]) -> dict[str, dict[str, Any]]:
    """``{model: small_objects section}`` of the models whose ``metrics.json`` has one."""
    out = {}
    for name, folder in model_dirs.items():
        path = Path(folder) / "metrics.json"
        if path.is_file():
            section = json.loads(path.read_text(encoding="utf-8")).get("small_objects") or {}
            if section.get("protocols"):
                out[name] = section
    return out


def bucket_table(sections: dict[str, dict[str, Any]], protocol: str) -> pd.DataFrame:
    """One row per model: AP of every bucket of ``protocol``, as ``value [lo, hi]`` when intervals exist."""
    rows = []
    for model, section in sections.items():
        entry = section["protocols"].get(protocol)
        if entry is None:
            continue
        row: dict[str, Any] = {"model": model}
        intervals = entry.get("intervals", {})
        for key in ["AP", "AP50", *[f"AP_{b}" for b in entry["buckets"]]]:
            value = entry["stats"].get(key) if key in entry["stats"] else entry["stats"].get(
                {"AP_small": "APs", "AP_medium": "APm", "AP_large": "APl"}.get(key, key))
            iv = intervals.get(key)
            text = "-" if value is None else f"{100 * value:.1f}"
            if iv and iv.get("lo") is not None and value is not None:
                text += f" [{100 * iv['lo']:.1f}, {100 * iv['hi']:.1f}]"
            row[key] = text
        rows.append(row)
    return pd.DataFrame(rows)


def tide_bars(sections: dict[str, dict[str, Any]], path: Path) -> Path:
    """ΔAP of each TIDE error type, overall and per bucket, one panel per model."""
    models = [m for m, s in sections.items() if "tide" in s]
    if not models:
        raise NotApplicable("no TIDE breakdown in the run's metrics")
    fig, axes = plt.subplots(1, len(models), figsize=(4.2 * len(models), 3.2), squeeze=False)
    for ax, model in zip(axes[0], models, strict=True):
        tide = sections[model]["tide"]
        groups = {"all": tide["main"], **tide.get("buckets", {})}
        types = tide["error_types"]
        width = 0.8 / len(groups)
        for i, (label, values) in enumerate(groups.items()):
            ax.bar(np.arange(len(types)) + i * width, [values[t] for t in types], width, label=label)
        ax.set_xticks(np.arange(len(types)) + 0.4 - width / 2, types)
        ax.set_title(f"{model}: TIDE ΔAP50 ({tide['protocol']} buckets)")
        ax.set_ylabel("ΔAP (points)")
        ax.legend()
    fig.tight_layout()
    return save(fig, path)


def tolerance_curves(sections: dict[str, dict[str, Any]], protocol: str, path: Path) -> Path:
    """AP per bucket over IoU 0.10:0.95 (solid) and NWD thresholds (dashed), one panel per model."""
    models = [m for m, s in sections.items() if protocol in s["protocols"]]
    if not models:
        raise NotApplicable(f"no {protocol} protocol in the run's metrics")
    fig, axes = plt.subplots(1, len(models), figsize=(4.2 * len(models), 3.2), squeeze=False)
    for ax, model in zip(axes[0], models, strict=True):
        section = sections[model]
        grid = section["tolerance_thresholds"]
        entry = section["protocols"][protocol]
        for k, (label, curve) in enumerate(entry["iou_curve"].items()):
            colour = f"C{k}"
            ax.plot(grid, [np.nan if v is None else v for v in curve], color=colour, label=f"{label} IoU")
            if "nwd_curve" in entry:
                ax.plot(grid, [np.nan if v is None else v for v in entry["nwd_curve"][label]], "--",
                        color=colour, label=f"{label} NWD")
        ax.set_xlabel("threshold")
        ax.set_ylabel("AP")
        ax.set_title(f"{model}: localisation tolerance ({protocol})")
        ax.legend(ncol=2)
    fig.tight_layout()
    return save(fig, path)


def sliced_table(model_dirs: dict[str, Path]) -> pd.DataFrame:
    """Full-image against sliced inference per model from ``sliced.json``: AP per bucket, ΔAP, cost."""
    rows = []
    for model, folder in model_dirs.items():
        path = Path(folder) / "sliced.json"
        if not path.is_file():
            continue
        data = json.loads(path.read_text(encoding="utf-8"))
        for mode in ("full", "sliced"):
            row = {"model": model, "inference": mode, "inputs/image": data[mode]["inputs_per_image"],
                   "ms/image": round(data[mode]["ms_per_image"], 1)}
            row.update({k: None if v is None else round(100 * v, 1) for k, v in data[mode]["stats"].items()
                        if k.startswith("AP")})
            rows.append(row)
        rows.append({"model": model, "inference": "Δ (sliced - full)",
                     **{k: None if v is None else round(100 * v, 1) for k, v in data["delta"].items()
                        if k.startswith("AP")}})
    return pd.DataFrame(rows)


def paired_table(run_root: Path, protocol: str) -> tuple[pd.DataFrame, dict[str, list[str]]]:
    """``comparisons.json`` (``bench.runner.comparisons``): each paired model minus the reference on the same
    bootstrap resamples, in AP points ``difference [lo, hi]`` per metric of ``protocol``, with the share of
    resamples in which the model is not better on AP; and the models left unpaired, by reason."""
    path = Path(run_root) / "comparisons.json"
    if not path.is_file():
        return pd.DataFrame(), {}
    data = json.loads(path.read_text(encoding="utf-8"))
    rows, skipped = [], {}
    for model, entry in data["models"].items():
        if "skipped" in entry:
            skipped.setdefault(str(entry["skipped"]), []).append(model)
            continue
        row: dict[str, Any] = {"model": model, "reference": data["reference"]}
        metrics = entry.get(protocol) or {}
        for key, d in metrics.items():
            point = d.get("difference") if d.get("difference") is not None else d.get("mean_difference")
            text = "—" if point is None or not np.isfinite(point) else f"{100 * point:+.1f}"
            if d.get("lo") is not None and np.isfinite(d["lo"]):
                text += f" [{100 * d['lo']:+.1f}, {100 * d['hi']:+.1f}]"
            row[f"Δ{key}"] = text
        ap = metrics.get("AP", {}).get("p_not_better")
        row["P(not better), AP"] = None if ap is None else round(ap, 3)
        rows.append(row)
    return pd.DataFrame(rows), skipped


def small_objects_frames(model_dirs: dict[str, Path], out_dir: Path, protocol: str = "aitod",
                         run_root: Path | None = None, panels: dict[str, Path] | None = None
                         ) -> dict[str, Any]:
    """The section's content, read once: tables as DataFrames (``None`` when empty) and the figure file
    names (``None`` when absent); ``run_root``: the run directory, whose ``comparisons.json`` gives the
    paired table; ``panels``: the models the figures draw (default: all of ``model_dirs``)."""
    sections = read_small_objects(model_dirs)
    if not sections:
        return {"available": False}
    drawn = {m: s for m, s in sections.items() if panels is None or m in panels}
    protocols = sorted({p for s in sections.values() for p in s["protocols"]})
    protocol = protocol if protocol in protocols else protocols[0]
    figures = {}
    for name, draw in (("tide", lambda p: tide_bars(drawn, p)),
                       ("tolerance", lambda p: tolerance_curves(drawn, protocol, p))):
        try:
            figures[name] = draw(out_dir / f"small_objects_{name}.png").name
        except NotApplicable:
            figures[name] = None
    sliced = sliced_table(model_dirs)
    paired, unpaired = paired_table(run_root, protocol) if run_root is not None else (pd.DataFrame(), {})
    return {"available": True, "protocol": protocol, "figures": figures, "unpaired": unpaired,
            "tables": {p: bucket_table(sections, p) for p in protocols},
            "sliced": sliced if len(sliced) else None, "paired": paired if len(paired) else None}


def as_html(frames: dict[str, Any]) -> dict[str, Any]:
    """:func:`small_objects_frames` with its tables as HTML, what the template partial reads."""
    if not frames.get("available"):
        return frames

    def html(frame: pd.DataFrame | None) -> str | None:
        return None if frame is None else frame.to_html(index=False, border=0)

    return {**frames, "tables": {p: html(f) for p, f in frames["tables"].items()},
            "sliced": html(frames["sliced"]), "paired": html(frames["paired"])}


def small_objects_section(model_dirs: dict[str, Path], out_dir: Path, protocol: str = "aitod",
                          run_root: Path | None = None, panels: dict[str, Path] | None = None
                          ) -> dict[str, Any]:
    """Everything the template partial needs: :func:`small_objects_frames` as HTML."""
    return as_html(small_objects_frames(model_dirs, out_dir, protocol, run_root, panels))

"""``comparisons.json``: is model B's AP over model A's real? A paired bootstrap over the test images.

Every model of a run is scored with the same bootstrap seed and resample count (``bench.runner.scoring``'s
``small_object_settings``), so resample r draws the same images for all of them and the per-resample values
in each ``models/<name>/bootstrap.json`` pair up, provided both were scored on the same images. Each
finished model is compared with the reference, the first finished model (in suite order, e.g. SSD300 in the
SSD suites) scored on the most test images: the interval of B - A per protocol and metric, and the share of
resamples in which B is not better (``bench.metrics.bootstrap``). A model scored on other images (a smoke
budget's ``eval_images`` subset) is listed as skipped, never paired.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.io import read_json, write_json

COMPARISONS_FILE = "comparisons.json"


def _samples(model_dir: Path) -> dict[str, Any] | None:
    path = model_dir / "bootstrap.json"
    status = model_dir / "status.json"
    if not path.is_file() or not status.is_file() or read_json(status).get("state") != "done":
        return None
    return read_json(path)


def paired_comparisons(out: Path, models: list[str]) -> dict[str, Any] | None:
    """Every finished model against the first finished one; ``None`` (no file) with fewer than two."""
    from bench.metrics.bootstrap import paired_comparison

    found = {name: s for name in models if (s := _samples(out / "models" / name)) is not None}
    if len(found) < 2:
        return None
    reference = max(found, key=lambda name: found[name].get("images") or 0)  # the first of the largest
    ref = found[reference]
    others = [name for name in found if name != reference]
    result: dict[str, Any] = {
        "reference": reference, "resamples": ref.get("resamples"), "seed": ref.get("seed"),
        "confidence": ref.get("confidence"),
        "definition": "per protocol and metric, model minus reference over the same bootstrap resamples of "
                      "the test images: mean, interval (lo, hi: basic bootstrap around the difference of the "
                      "two models' estimates when both are saved, else percentile; percentile_lo/hi beside "
                      "it), std, and p_not_better, the share of (bias-corrected) resampled differences in "
                      "which the model is not better than the reference",
        "models": {}}
    for name in others:
        other = found[name]
        if (other.get("resamples"), other.get("seed")) != (ref.get("resamples"), ref.get("seed")):
            result["models"][name] = {"skipped": "scored with other bootstrap resamples than the reference"}
            continue
        if other.get("image_ids_sha256") != ref.get("image_ids_sha256"):
            result["models"][name] = {"skipped": f"scored on other test images than the reference "
                                                 f"({other.get('images')} against {ref.get('images')})"}
            continue
        rows: dict[str, dict[str, Any]] = {}
        for protocol, metrics in ref["samples"].items():
            theirs = other["samples"].get(protocol, {})
            # each model's estimate on the data itself, as saved beside its samples: basic intervals
            ref_est = (ref.get("estimates") or {}).get(protocol, {})
            their_est = (other.get("estimates") or {}).get(protocol, {})
            rows[protocol] = {metric: paired_comparison(values, theirs[metric], ref.get("confidence") or 0.95,
                                                        estimate_a=ref_est.get(metric),
                                                        estimate_b=their_est.get(metric))
                              for metric, values in metrics.items()
                              if metric in theirs and len(theirs[metric]) == len(values)}
        result["models"][name] = rows
    write_json(result, out / COMPARISONS_FILE)
    return result

"""The papers' stated training settings (``papers/settings.csv``) beside this run's value of the same setting.

The run's values come from its resolved plan (``plan.json`` in the run directory, written by the runner with
``bench.plan``: every value after inheritance, overrides and the trainer's rules), falling back to each
model's ``info.json`` recipe for runs written before plans existed. A setting the architecture fixes (prior
scales, aspect ratios, fusion weights...) is the model's, not the run's: the row says so and points at the
model notes, so no paper value stands beside an empty cell.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from reports.papers import load_settings
from reports.rundir import Run, read_json

MISSING = "—"
ARCHITECTURE = {"prior_scales", "aspect_ratios", "match_iou", "neg_pos_ratio", "priors_per_location",
                "fusion_weights"}


def load_plan(run: Run) -> dict[str, Any] | None:
    """``plan.json`` of the run directory, or ``None`` for runs without one."""
    path = run.root / "plan.json"
    return read_json(path) if path.is_file() else None


def _num(value: Any) -> str:
    if value is None:
        return MISSING
    if isinstance(value, float):
        return f"{value:.4g}" if not value.is_integer() else f"{value:.0f}"
    return str(value)


def _steps(plan: dict[str, Any], key: str) -> str:
    phases = plan["lr"].get("phases") or []
    steps = [p for p in phases if p["phase"].startswith("step")]
    if not steps:
        return f"none ({plan['schedule']['kind']} schedule)"
    return "/".join(_num(round(p[key], 1) if key == "epoch" else p[key]) for p in steps)


def _warmup(plan: dict[str, Any]) -> str:
    warm, per_epoch = plan["warmup"], plan["schedule"]["iterations_per_epoch"]
    if warm.get("epochs") is not None:
        return f"{_num(warm['epochs'])} ({_num(warm['iterations'])} iterations)"
    if per_epoch:
        return f"{warm['iterations'] / per_epoch:.2f} ({warm['iterations']} iterations)"
    return f"{warm['iterations']} iterations"


# setting -> the run's value from one model's resolved plan
FROM_PLAN: dict[str, Callable[[dict[str, Any]], str]] = {
    "batch_size": lambda m: f"{m['schedule']['batch_size']}" + (
        f" (x{m['schedule']['accumulate']} accumulated)" if m["schedule"]["accumulate"] > 1 else ""),
    "lr": lambda m: _num(m["lr"]["base"]),
    "momentum": lambda m: _num(m["optimizer"]["momentum"]),
    "weight_decay": lambda m: (_num(m["optimizer"]["weight_decay"]) + (
        f" (applied {_num(m['optimizer']['weight_decay_applied'])})"
        if m["optimizer"]["weight_decay_applied"] != m["optimizer"]["weight_decay"] else "")),
    "optimizer": lambda m: m["optimizer"]["name"].upper() + (
        " (Nesterov)" if m["optimizer"]["nesterov"] else ""),
    "epochs": lambda m: _num(None if m["schedule"]["epochs"] is None else round(m["schedule"]["epochs"], 1)),
    "iterations": lambda m: _num(m["schedule"]["iterations"]),
    "max_batches_per_epoch": lambda m: _num(m["schedule"]["iterations_per_epoch"]),
    "lr_steps_epochs": lambda m: _steps(m, "epoch"),
    "lr_steps_iterations": lambda m: _steps(m, "iteration"),
    "warmup_epochs": _warmup,
    "input_size": lambda m: _num(m["input"]["size"]),
    "pretrained_weights": lambda m: m["pretrained"]["weights"],
}
FROM_RECIPE = ("batch_size", "lr", "momentum", "weight_decay", "optimizer", "epochs", "iterations")


def run_value(run: Run, plan: dict[str, Any] | None, model: str, setting: str) -> str:
    """This run's value of ``setting`` for ``model``, or why there is none."""
    m = run.models.get(model)
    if m is None:
        return f"{MISSING} (not in this run)"
    if setting in ARCHITECTURE:
        return "fixed by the architecture: see the model's notes"
    if setting == "priors":
        return _num(m.info.get("priors"))
    if setting == "hardware":
        return str(run.manifest.get("device", {}).get("name") or MISSING)
    if setting == "framework":
        return "PyTorch (this suite)"
    data = (plan or {}).get("data") or {}
    if setting in ("train_data", "test_data"):
        split = data.get("train_split" if setting == "train_data" else "test_split")
        name = run.manifest.get("data", {}).get("name")
        return f"{name}: {split}" if split else str(name or MISSING)
    if setting == "config":
        suite = (plan or {}).get("suite") or run.manifest.get("suite", {})
        return f"suite {suite.get('name', MISSING)} ({suite.get('protocol', 'custom')} protocol)"
    resolved = ((plan or {}).get("models") or {}).get(model)
    if resolved is not None and setting in FROM_PLAN:
        try:
            return FROM_PLAN[setting](resolved)
        except (KeyError, TypeError, IndexError):  # a plan of an older format lacks the key: the recipe's
            pass
    recipe = m.info.get("recipe") or {}
    if setting in FROM_RECIPE and setting in recipe:
        return _num(recipe[setting])
    return MISSING


def settings_rows(run: Run, plan: dict[str, Any] | None) -> list[dict[str, Any]]:
    """One row per paper setting; a setting of model ``all`` gets one row per run model of that seed."""
    settings = load_settings()
    rows = []
    for s in settings.to_dict("records"):
        models = [s["model"]]
        if s["model"] == "all":
            named = set(settings.loc[settings["seed"] == s["seed"], "model"]) - {"all"}
            models = [name for name in run.models if name in named] or ["all"]
        for model in models:
            value = (run_value(run, plan, model, s["setting"]) if model != "all" else
                     f"{MISSING} (not in this run)")
            rows.append({**s, "model": model, "run": value})
    return rows

"""Reading a suite file: its bases (``bench.suite.compose``), per-file key checks, then the typed ``Suite``.

Errors name the file that holds the offending key or value (a base, not the suite that inherits it) and the
dotted key; ``load`` is re-exported as ``bench.suite.spec.load_suite``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.errors import BenchInputError
from bench.suite.compose import ComposedSuite, compose, exclusive_schedule_length, merge_into
from bench.suite.schema import as_table, check_keys, convert, from_table, reject_unknown
from bench.suite.spec import (
    Budget,
    DataConfig,
    EvaluationSettings,
    Override,
    Overrides,
    Protocol,
    Recipe,
    SpeedSettings,
    Suite,
    as_dict,
    bundled_suites,
    suite_path,
)
from bench.suite.variants import VARIANT_KEYS, Variant, parse_variants, register_variants

TOP_LEVEL = {"name", "description", "base", "protocol", "models", "data", "recipe", "evaluation", "speed",
             "budget", "overrides", "variants"}
SECTIONS = {"data": DataConfig, "recipe": Recipe, "evaluation": EvaluationSettings, "speed": SpeedSettings,
            "budget": Budget}


def load(name_or_path: str) -> Suite:
    path = suite_path(name_or_path)
    if not path.is_file():
        raise BenchInputError(path, f"no such suite; bundled suites: {', '.join(bundled_suites())}")
    composed = compose(path, _check_file)
    try:
        suite = parse_suite(composed.raw, path, composed.sha256, composed)
    except BenchInputError as err:  # name the file that set the offending value, not the one that inherits it
        source = composed.source_of(err.field, path)
        if source == path.resolve() or err.path != str(path):
            raise
        raise BenchInputError(source, err.detail, entry=err.entry, field=err.field) from None
    if suite.variants:  # only then is the model registry imported
        register_variants(suite)
    return suite


def _check_file(raw: dict[str, Any], path: Path) -> None:
    """Unknown keys of one suite file, before inheritance (types are checked on the merged document)."""
    reject_unknown(raw, TOP_LEVEL, path, "")
    for section, cls in SECTIONS.items():
        if section in raw:
            check_keys(cls, raw[section], path, section)
    for name, table in as_table(raw.get("variants", {}), path, "variants").items():
        values = {k: v for k, v in as_table(table, path, f"variants.{name}").items() if k not in VARIANT_KEYS}
        check_keys(Recipe, values, path, f"variants.{name}")
    overrides = as_table(raw.get("overrides", {}), path, "overrides")
    for key, table in overrides.items():
        if key in ("family", "group"):
            for name, inner in as_table(table, path, f"overrides.{key}").items():
                _check_override_keys(inner, path, f"overrides.{key}.{name}", key == "group")
        else:
            _check_override_keys(table, path, f"overrides.{key}", False)


def _check_override_keys(table: Any, path: Path, key: str, group: bool) -> None:
    values = dict(as_table(table, path, key))
    values.pop("reason", None)
    if group:
        values.pop("models", None)
    check_keys(Recipe, values, path, key)


def parse_suite(raw: dict[str, Any], path: Path, sha256: str = "", composed: ComposedSuite | None = None
                ) -> Suite:
    """Validate a (merged) suite document; every error names ``path`` and the dotted key."""
    top = dict(raw)
    reject_unknown(top, TOP_LEVEL, path, "")
    models = convert(top.get("models"), list[str], path, "models")
    if not models:
        raise BenchInputError(path, "a suite needs at least one model", field="models")
    recipe = from_table(Recipe, top.get("recipe", {}), path, "recipe")
    layers = composed.overrides if composed is not None else [(path, top.get("overrides", {}))]
    overrides = [o for source, table in layers for o in _overrides_of(recipe, table, Path(source))]
    variants = parse_variants(top.get("variants", {}), path,
                              None if composed is None else composed.source_of)
    overrides += [_variant_override(recipe, v) for v in variants.values() if v.recipe]
    return Suite(
        name=convert(top.get("name", path.stem), str, path, "name"),
        description=convert(top.get("description", ""), str, path, "description"),
        models=models,
        data=from_table(DataConfig, top.get("data", {}), path, "data"),
        recipe=recipe,
        evaluation=from_table(EvaluationSettings, top.get("evaluation", {}), path, "evaluation"),
        speed=from_table(SpeedSettings, top.get("speed", {}), path, "speed"),
        budget=from_table(Budget, top.get("budget", {}), path, "budget"),
        protocol=convert(top.get("protocol", "custom"), Protocol, path, "protocol"),
        overrides=Overrides(overrides),
        variants=variants,
        path=path.resolve(),
        sha256=sha256,
        files=[str(f) for f in composed.files] if composed is not None else [str(path.resolve())],
    )


def _overrides_of(recipe: Recipe, table: Any, path: Path) -> list[Override]:
    """One file's ``[overrides.*]`` tables, in the file's order."""
    out = []
    for key, value in as_table(table, path, "overrides").items():
        if key in ("family", "group"):
            for name, inner in as_table(value, path, f"overrides.{key}").items():
                out.append(_override(recipe, key, name, inner, path))
        else:
            out.append(_override(recipe, "model", key, value, path))
    return out


def _override(recipe: Recipe, kind: str, target: str, table: Any, path: Path) -> Override:
    key = f"overrides.{target}" if kind == "model" else f"overrides.{kind}.{target}"
    values = dict(as_table(table, path, key))
    reason = values.pop("reason", None)
    if not isinstance(reason, str) or not reason.strip():
        raise BenchInputError(path, "every override needs a non-empty 'reason' (the paper it follows)",
                              field=f"{key}.reason")
    models: list[str] = []
    if kind == "group":
        models = convert(values.pop("models", []), list[str], path, f"{key}.models")
        if not models:
            raise BenchInputError(path, "a group override needs a non-empty 'models' list",
                                  field=f"{key}.models")
    # Validate the keys as the shared recipe's, laid over it; keep them as given (nested tables stay partial).
    merged = merge_into(as_dict(recipe), values)
    exclusive_schedule_length(merged, values)
    from_table(Recipe, merged, path, key)
    return Override(reason.strip(), values, kind, target, models, str(path.resolve()))


def _variant_override(recipe: Recipe, variant: Variant) -> Override:
    """A variant's recipe keys as its own override layer, validated over the shared recipe."""
    path, key = Path(variant.source), f"variants.{variant.name}"
    merged = merge_into(as_dict(recipe), variant.recipe)
    exclusive_schedule_length(merged, variant.recipe)
    from_table(Recipe, merged, path, key)
    return Override(variant.reason, variant.recipe, "variant", variant.name, [], variant.source)

"""Recipe overrides: keys a suite replaces for a family, a named group of models or one model, each with the
paper's reason; the report and ``--plan`` list every one that applies to a model, with its source file.

A suite variant's own recipe keys (``[variants.NAME]``, ``bench.suite.variants``) are an override of kind
``"variant"``; a variant also takes every override of its base model, before its own."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from bench.suite.compose import merge_into

OverrideKind = Literal["family", "group", "model", "variant"]
# Applied in this order: model wins; a variant's own keys come after its base model's [overrides.BASE], and
# an [overrides.VARIANT] table naming the variant itself last (VARIANT_SELF).
KIND_ORDER: dict[str, int] = {"family": 0, "group": 1, "model": 2, "variant": 3}
VARIANT_SELF = 4


@dataclass(frozen=True)
class Override:
    """Recipe keys replaced for a family, a named group of models or one model, with the paper's reason.

    ``values`` holds the keys as the suite file gives them (nested tables partial), validated against the
    shared recipe; ``source`` is the suite file that declares them.
    """

    reason: str
    values: dict[str, Any]
    kind: OverrideKind = "model"
    target: str = ""  # the family, group or model name
    models: list[str] = field(default_factory=list)  # a group's members
    source: str = ""

    def applies_to(self, model: str, family: str | None) -> bool:
        if self.kind == "family":
            return family == self.target
        return model in self.models if self.kind == "group" else model == self.target

    @property
    def label(self) -> str:
        if self.kind == "variant":
            return f"variants.{self.target}"
        return self.target if self.kind == "model" else f"{self.kind} {self.target}"


@dataclass(frozen=True)
class Overrides:
    """Every override of a suite and its bases, in file order."""

    layers: list[Override] = field(default_factory=list)

    def __iter__(self) -> Iterator[Override]:
        return iter(self.layers)

    def __len__(self) -> int:
        return len(self.layers)

    def applying_to(self, model: str, family: str | None, base: str | None = None) -> list[Override]:
        """The overrides of ``model`` in the order they apply: family, group, model; files in order.

        ``base``: the registry model of a variant ``model``, whose overrides apply first."""
        variant = base is not None and base != model
        hits = [o for o in self.layers if o.applies_to(model, family)
                or (variant and o.kind != "variant" and o.applies_to(base, family))]

        def order(o: Override) -> int:
            return VARIANT_SELF if variant and o.kind == "model" and o.target == model else KIND_ORDER[o.kind]

        return sorted(hits, key=order)  # stable: file order within a kind

    def get(self, model: str) -> Override | None:
        """The ``[overrides.MODEL]`` tables of one model as one override (the runner's info.json before
        family and group overrides existed); ``applying_to`` lists every override with its own reason."""
        own = sorted((o for o in self.layers if o.kind in ("model", "variant") and o.target == model),
                     key=lambda o: o.kind != "variant")  # a variant's own keys, then [overrides.VARIANT]
        if not own:
            return None
        values: dict[str, Any] = {}
        for o in own:
            merge_into(values, o.values)
        return Override("; ".join(o.reason for o in own), values, own[-1].kind, model, source=own[-1].source)

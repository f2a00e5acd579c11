"""One colour per model, the same in every figure of every report: zoo models keep their registry position.

The zoo (name, family) comes from the run's manifest (``Run.zoo``), so the report holds no copy of it. The
first family gets dark shades, the second light shades of the same hues, so a family never poses as the other.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import seaborn as sns

Colour = tuple[float, float, float]
_TAB20 = sns.color_palette("tab20", 20)  # hue k: dark at 2k, light at 2k + 1; hue 7 is grey
_DARK = [_TAB20[2 * hue] for hue in (0, 1, 2, 3, 4, 5, 6, 8, 9)] + [(0.0, 0.0, 0.0)]
_LIGHT = [_TAB20[2 * hue + 1] for hue in (0, 2, 4, 6, 9, 1, 3, 5, 8)]
_EXTRA = sns.color_palette("husl", 12)
PAPER_COLOUR: Colour = _TAB20[14]  # grey: paper numbers, never a model


def zoo_colours(zoo: Sequence[dict[str, Any]]) -> dict[str, Colour]:
    """Fixed colours of the zoo's models: per family in order of appearance, dark shades then light ones."""
    families: dict[str, list[str]] = {}
    for entry in zoo:
        families.setdefault(str(entry.get("family", "")), []).append(entry["name"])
    fixed: dict[str, Colour] = {}
    for shades, names in zip((_DARK, _LIGHT), families.values(), strict=False):
        fixed.update(zip(names, shades, strict=False))
    return fixed


def model_colours(names: Iterable[str], zoo: Sequence[dict[str, Any]] = ()) -> dict[str, Colour]:
    """Zoo models get their fixed colour; other names take extra hues in the order given."""
    fixed = zoo_colours(zoo)
    extra = iter(_EXTRA)
    return {name: fixed.get(name) or next(extra, PAPER_COLOUR) for name in names}

"""One colour per model, the same in every figure of every report (models keep their zoo position)."""

from __future__ import annotations

from collections.abc import Iterable

import seaborn as sns

from reports.rundir import ZOO

Colour = tuple[float, float, float]
_TAB20 = sns.color_palette("tab20", 20)  # hue k: dark at 2k, light at 2k + 1; hue 7 is grey
_SSD_FAMILY = [_TAB20[2 * hue] for hue in (0, 1, 2, 3, 4, 5, 6, 8, 9)] + [(0.0, 0.0, 0.0)]
_YOLO_FAMILY = [_TAB20[2 * hue + 1] for hue in (0, 2, 4, 6, 9)]  # light shades, so they never pose as SSDs
_FIXED: dict[str, Colour] = dict(zip(ZOO, _SSD_FAMILY + _YOLO_FAMILY, strict=True))
_EXTRA = sns.color_palette("husl", 12)
PAPER_COLOUR: Colour = _TAB20[14]  # grey: paper numbers, never a model


def model_colours(names: Iterable[str]) -> dict[str, Colour]:
    """Zoo models get their fixed colour; other names take extra hues in the order given."""
    names = list(names)
    extra = iter(_EXTRA)
    return {name: _FIXED.get(name) or next(extra, PAPER_COLOUR) for name in names}

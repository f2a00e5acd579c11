"""``python -m detectors list [--num-classes N] [--json] [--no-flops]``: every registered model and its size.

Models are built on the meta device where their constructor allows it, so no weights are materialised and
even the 100M-parameter models list instantly; a constructor that needs real values (ultralytics runs a
forward pass to find its strides) is built on CPU instead. A model whose training plan changes its
architecture (MFSSD-Pruned) is listed with the architecture the plan ends in (``build_preview``).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from detectors.complexity import count_flops, count_params
from detectors.registry import build_without_weights, builders_quiet, model_names

COLUMNS = ("name", "family", "input_size", "params", "priors", "gflops")


def describe(name: str, num_classes: int, with_flops: bool = True) -> dict[str, Any]:
    """One listing row: name, family, input_size, params, priors (None if anchor-free) and gflops."""
    model = build_without_weights(name, num_classes, preview=True)
    gflops = round(count_flops(model, model.input_size), 2) if with_flops else None
    return {"name": name, "family": model.family, "input_size": model.input_size,
            "params": count_params(model), "priors": model.num_priors, "gflops": gflops}


def format_table(rows: list[dict[str, Any]]) -> str:
    def cell(value: Any) -> str:
        if value is None:
            return "-"
        return f"{value:,}" if isinstance(value, int) else str(value)

    cells = [list(COLUMNS)] + [[cell(row[c]) for c in COLUMNS] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(COLUMNS))]

    def line(row: list[str]) -> str:  # text columns left-aligned, numbers right-aligned
        pairs = enumerate(zip(row, widths, strict=True))
        return "  ".join(v.ljust(w) if i < 2 else v.rjust(w) for i, (v, w) in pairs)

    return "\n".join(line(r) for r in cells)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m detectors", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    listing = sub.add_parser("list", help="every registered model with its parameters, priors and GFLOPs")
    listing.add_argument("--num-classes", type=int, default=80, help="object classes, background excluded")
    listing.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    listing.add_argument("--no-flops", action="store_true", help="skip the GFLOPs count (gflops is null)")
    args = parser.parse_args(argv)
    if args.num_classes < 1:
        parser.error("--num-classes must be at least 1")

    rows, failed = [], False
    with builders_quiet():
        for name in model_names():
            try:
                rows.append(describe(name, args.num_classes, with_flops=not args.no_flops))
            except Exception as err:  # one broken model must not hide the others
                print(f"error: {name}: {err.__class__.__name__}: {err}", file=sys.stderr)
                failed = True
    print(json.dumps(rows, indent=2) if args.json else format_table(rows))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

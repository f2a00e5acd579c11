"""Cluster launcher: one submitit job per model (Slurm or this machine), requeue on preemption, collect.

``bench.run`` calls ``add_launcher_arguments(parser)``, then ``launch(args, models, out)`` when ``--launcher``
is given and ``collect(out)`` for ``--collect``. Only ``options`` is imported eagerly: parsing the command
line needs neither submitit nor torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.cluster.options import LauncherOptions, add_launcher_arguments

__all__ = ["LauncherOptions", "add_launcher_arguments", "collect", "launch"]


def launch(args: Any, models: list[str], out: Path, **kwargs: Any) -> int:
    from bench.cluster.launch import launch as _launch

    return _launch(args, models, out, **kwargs)


def collect(out: Path) -> int:
    from bench.cluster.collect import collect as _collect

    return _collect(out)

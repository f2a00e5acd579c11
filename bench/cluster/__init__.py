"""Cluster launcher: one submitit job per model (Slurm or this machine), requeue on preemption, collect.

``bench.run`` calls ``add_launcher_arguments(parser)``, then ``bench.cluster.launch.launch(args, models,
out)`` when ``--launcher`` is given and ``bench.cluster.collect.collect(out)`` for ``--collect``, each
imported only then: parsing the command line needs neither submitit nor torch. (No package-level
``launch`` or ``collect``: importing a submodule rebinds its name on the package, so such a wrapper would
silently become a module.)
"""

from __future__ import annotations

from bench.cluster.options import LauncherOptions, add_launcher_arguments

__all__ = ["LauncherOptions", "add_launcher_arguments"]

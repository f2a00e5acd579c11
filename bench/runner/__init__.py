"""The per-model work of a run: the run directory, each model's job, its training plan, scoring."""

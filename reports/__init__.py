"""Run reports: ``python -m reports.build RUN_DIR`` writes report.md, report.html and figures/ from a run."""

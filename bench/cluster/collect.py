"""``python -m bench.run --collect RUN``: every model's state in a launched run; the report once all finished.

A model's state is its ``models/<name>/status.json`` (written by ``bench.run``), checked against its job
(``launch.json``): a model still "running" whose job has ended was *lost* (killed, out of memory, out of
requeues; its log is named). Exit status: 0 every model done and the report built; 1 every model finished
but some failed or were lost (report built, showing them); 2 bad input; 3 not finished yet (no report).
Only JSON and submitit's files are read here (never a pickle), and torch is not imported.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path
from typing import Any

from bench.errors import BenchInputError
from bench.io import read_json

LAUNCH_RECORD = "launch.json"
NOT_FINISHED = 3
_SLURM_ACTIVE = {"PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "COMPLETING",
                 "RESIZING", "SUSPENDED", "PREEMPTED", "SIGNALING", "STAGE_OUT", "RESV_DEL_HOLD"}


def model_status(model_dir: Path) -> dict[str, Any]:
    path = model_dir / "status.json"
    return read_json(path) if path.is_file() else {"state": "pending", "stage": None, "error": None}


def job_activity(out: Path, record: dict[str, Any], job: dict[str, Any]) -> str:
    """``active`` (queued or running), ``ended`` or ``unknown`` for a job recorded in ``launch.json``."""
    job_id = str(job["job_id"])
    folder = out / record.get("folder", "jobs")
    if (folder / f"{job_id}_0_result.pkl").exists():  # submitit writes it when the job returns or raises
        return "ended"
    if record.get("launcher") == "local":
        if record.get("host") != socket.gethostname():
            return "unknown"
        return "active" if _process_alive(int(job_id)) else "ended"
    try:
        import submitit

        state = submitit.SlurmJob(folder=folder, job_id=job_id).state.split()[0].upper()
    except Exception:  # no sacct here (not a login node), or Slurm forgot the job
        return "unknown"
    if state == "UNKNOWN":
        return "unknown"
    return "active" if state in _SLURM_ACTIVE else "ended"


def _process_alive(pid: int) -> bool:
    """The local job's controller process exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def model_states(out: Path) -> list[dict[str, Any]]:
    """One row per model: name, state (pending/running/done/failed/lost), stage, attempts, job, note."""
    out = Path(out)
    record_path = out / LAUNCH_RECORD
    record = read_json(record_path) if record_path.is_file() else None
    if record is None and not (out / "manifest.json").is_file():
        raise BenchInputError(out, "not a run directory: neither launch.json nor manifest.json is there")
    jobs = (record or {}).get("jobs", {})
    names = list(jobs) + sorted(p.parent.name for p in out.glob("models/*/status.json")
                                if p.parent.name not in jobs)
    rows = []
    for name in names:
        model_dir = out / "models" / name
        status = model_status(model_dir)
        job = jobs.get(name)
        attempts = read_json(model_dir / "job.json")["attempts"] if (model_dir / "job.json").is_file() else []
        state, note = status.get("state", "pending"), status.get("error") or ""
        if state in ("pending", "running") and job is not None and job_activity(out, record, job) == "ended":
            log = out / record.get("folder", "jobs") / f"{job['job_id']}_0_log.err"
            state, note = "lost", f"its job ended before the model finished; see {log}"
        rows.append({"model": name, "state": state, "stage": status.get("stage"), "attempts": len(attempts),
                     "job_id": None if job is None else job["job_id"], "note": note})
    return rows


def print_states(rows: list[dict[str, Any]], out: Path) -> None:
    print(f"run directory: {out}")
    print(f"  {'model':<18} {'state':<8} {'stage':<16} {'attempts':>8}  {'job':<12} note")
    for r in rows:
        print(f"  {r['model']:<18} {r['state']:<8} {r['stage'] or '-':<16} {r['attempts']:>8}  "
              f"{r['job_id'] or '-':<12} {r['note']}")


def collect(out: Path) -> int:
    """Print the states; once every model is done, failed or lost, build the report (see the module doc)."""
    out = Path(out)
    rows = model_states(out)
    print_states(rows, out)
    unfinished = [r["model"] for r in rows if r["state"] in ("pending", "running")]
    if unfinished or not rows:
        print(f"{len(rows) - len(unfinished)} of {len(rows)} models finished; no report yet", file=sys.stderr)
        return NOT_FINISHED
    if not (out / "manifest.json").is_file():
        print("no job got as far as writing manifest.json: no report (see the job logs)", file=sys.stderr)
        return 1
    from reports.build import build_report

    markdown, html = build_report(out)
    print(f"report: {html} ({markdown.name})")
    return 0 if all(r["state"] == "done" for r in rows) else 1

"""Issue 13's five failures as real-hardware checks: tiny ``python -m bench.run`` invocations on the GPU.

Each runs the ``smoke`` suite (through ``base = smoke.toml``: AMP, fp16 speed rows) as a subprocess, exactly
as a user would: ``--device cuda`` start-up, also under ``torchrun --nproc_per_node=1``; a device that is not
there; ``kill -9`` mid-training then ``--resume``; ``mfssd300_pruned``; NCCL DDP over every GPU present; and
a DDP rank whose loss turns NaN, which must end the run within a bound with the earlier model intact.
(The fifth item, AMP with the slimming L1 term, is ``bench.gpu_check.slimming``.)
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from bench.gpu_check import Check, CheckContext, CheckFailed, CheckSkipped, expect
from bench.gpu_check.common import REPO_ROOT

MODEL = "yolov5nu"
NAN_MODEL = "nan_on_rank1"
DRIVER = f'''"""bench.run with one more model, {NAN_MODEL!r}: {MODEL} whose loss is NaN on DDP rank 1 only."""
import math
import os
import re
import sys

from detectors import build_model, model_spec, register

BASE = model_spec({MODEL!r})


def build(num_classes, **options):
    model = build_model({MODEL!r}, num_classes, **options)
    loss = model.loss

    def failing(images, targets):
        out = loss(images, targets)
        return {{**out, "loss": out["loss"] * math.nan}} if os.environ.get("RANK") == "1" else out

    model.loss = failing
    return model


register({NAN_MODEL!r}, family=BASE.family, input_size=BASE.input_size, options=BASE.options)(build)

from bench.run import main  # noqa: E402

sys.exit(main(sys.argv[1:]))
'''


def write_suite(ctx: CheckContext, name: str, **recipe: Any) -> Path:
    """``smoke`` with AMP and fp16 speed rows on CUDA (fp32 in the dry run) and ``recipe`` changes."""
    from bench.suite.spec import SUITES_DIR

    amp = ctx.cuda
    recipe = {"precision": "amp" if amp else "fp32", **recipe}
    lines = [f'base = "{Path(SUITES_DIR).resolve() / "smoke.toml"}"', f'description = "gpu check: {name}"',
             "[recipe]", *(f"{k} = {json.dumps(v)}" for k, v in recipe.items()),
             "[speed]", 'protocols = ["model", "e2e", "throughput"]', f"fp16 = {json.dumps(amp)}"]
    path = ctx.workdir / f"{name}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def command(ctx: CheckContext, suite: Path, out: Path, *args: str, nproc: int | None = None,
            script: Path | None = None, device: str | None = None) -> list[str]:
    """``python -m bench.run`` (or ``script``), under ``torchrun --standalone`` when ``nproc`` is given."""
    target = [str(script)] if script else ["-m", "bench.run"]
    launcher = [] if nproc is None else ["-m", "torch.distributed.run", "--standalone",
                                         f"--nproc_per_node={nproc}"]
    return [sys.executable, *launcher, *target, "--suite", str(suite), "--out", str(out), "--cache-dir",
            str(ctx.workdir / "cache"), "--device", device or ctx.device.type, *args]


def environment() -> dict[str, str]:
    return {**os.environ, "YOLO_OFFLINE": "1", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "4")}


def run(ctx: CheckContext, cmd: list[str], limit: float) -> dict[str, Any]:
    """Run ``cmd`` from the repository root; a run past ``limit`` seconds (or the budget) is a failure."""
    limit = max(30.0, min(limit, ctx.remaining() + 60))
    start = time.monotonic()
    try:
        proc = subprocess.run(cmd, cwd=REPO_ROOT, env=environment(), capture_output=True, text=True,
                              timeout=limit)
    except subprocess.TimeoutExpired as err:  # its captured output is bytes whatever text= says
        tail = err.stderr.decode(errors="replace") if isinstance(err.stderr, bytes) else err.stderr or ""
        raise CheckFailed(f"did not end within {limit:.0f} s: {' '.join(cmd[1:])}",
                          {"stderr_tail": without_progress_bars(tail)[-3000:]}) from None
    return {"exit_code": proc.returncode, "seconds": round(time.monotonic() - start, 1),
            "stderr_tail": without_progress_bars(proc.stderr)[-3000:]}


def without_progress_bars(text: str) -> str:
    """stderr minus tqdm's bar updates, which would crowd the messages out of the recorded tail."""
    return "\n".join(line for line in text.splitlines() if not re.search(r"\d+%\|", line))


def state(out: Path, model: str) -> dict[str, Any]:
    path = out / "models" / model / "status.json"
    return json.loads(path.read_text()) if path.is_file() else {"state": "missing"}


def expect_done(out: Path, model: str, result: dict[str, Any], what: str) -> None:
    status = state(out, model)
    result[f"{what}_state"] = status.get("state")
    expect(result["exit_code"] == 0 and status.get("state") == "done", f"{what}: {model} did not finish",
           **result, status=status)


def cuda_startup(ctx: CheckContext) -> dict[str, Any]:
    """Issue 13.1: ``--device cuda`` alone and under ``torchrun --nproc_per_node=1``; speed rows on CUDA."""
    suite = write_suite(ctx, "startup")
    out = ctx.workdir / "startup"
    result = run(ctx, command(ctx, suite, out, "--models", MODEL), 300)
    expect_done(out, MODEL, result, "plain")
    speed = json.loads((out / "models" / MODEL / "speed.json").read_text())["results"]
    result["speed_rows"] = [{k: r[k] for k in ("protocol", "precision", "timer", "mean_ms")} for r in speed]
    if ctx.cuda:
        expect({r["timer"] for r in speed} == {"cuda_events"} and {r["precision"] for r in speed} == {
            "fp32", "fp16"}, "speed.json on CUDA: CUDA events, fp32 and fp16 rows expected", **result)
    out = ctx.workdir / "startup_torchrun"
    result["torchrun"] = run(ctx, command(ctx, suite, out, "--models", MODEL, nproc=1), 300)
    expect_done(out, MODEL, result["torchrun"], "torchrun_nproc_1")
    return result


def device_errors(ctx: CheckContext) -> dict[str, Any]:
    """A GPU index past the last one, and a torchrun world larger than the GPUs: a named error, not a hang."""
    if not ctx.cuda:
        raise CheckSkipped("needs CUDA: the devices it asks for are GPUs")
    count = torch.cuda.device_count()
    suite = write_suite(ctx, "device_errors")
    missing = run(ctx, command(ctx, suite, ctx.workdir / "bad_index", "--models", MODEL,
                               device=f"cuda:{count}"), 120)
    expect(missing["exit_code"] == 2 and "Traceback" not in missing["stderr_tail"],
           f"--device cuda:{count} with {count} GPU(s): one line and exit 2 expected", **missing)
    crowded = run(ctx, command(ctx, suite, ctx.workdir / "crowded", "--models", MODEL, nproc=count + 1), 180)
    expect(crowded["exit_code"] != 0 and "error:" in crowded["stderr_tail"],
           f"torchrun with {count + 1} ranks on {count} GPU(s) must stop with a named error", **crowded)
    return {"gpus": count, "missing_index": missing, "oversubscribed_torchrun": crowded}


def resume_on_cuda(ctx: CheckContext) -> dict[str, Any]:
    """Issue 13.2: ``kill -9`` after a checkpoint, then ``--resume`` finishes the model on CUDA."""
    iterations = ctx.size(200, 30)
    suite = write_suite(ctx, "resume", iterations=iterations, checkpoint_every=ctx.size(10, 5))
    out = ctx.workdir / "resume"
    ckpt = out / "models" / MODEL / "checkpoint.pt"
    proc = subprocess.Popen(command(ctx, suite, out, "--models", MODEL), cwd=REPO_ROOT, env=environment(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    expect(ckpt.exists(), "no checkpoint appeared before the kill", exit_code=proc.returncode)
    killed_at = int(torch.load(ckpt, map_location="cpu", weights_only=True)["iteration"])
    result = {"iterations": iterations, "killed_after_checkpoint": killed_at,
              "state_at_kill": state(out, MODEL).get("state")}
    result.update(run(ctx, command(ctx, suite, out, "--models", MODEL, "--resume"), 300))
    expect_done(out, MODEL, result, "resumed")
    with (out / "models" / MODEL / "train_log.csv").open(newline="") as fh:
        result["last_logged_iteration"] = int(list(csv.DictReader(fh))[-1]["iteration"])
    expect(result["last_logged_iteration"] == iterations, "the resumed run did not reach the last iteration",
           **result)
    return result


def pruned_on_cuda(ctx: CheckContext) -> dict[str, Any]:
    """Issue 13.3: ``mfssd300_pruned`` (sparse training, pruning, fine-tuning) trains on the device."""
    suite = write_suite(ctx, "pruned")
    out = ctx.workdir / "pruned"
    result = run(ctx, command(ctx, suite, out, "--models", "mfssd300_pruned"), 400)
    expect_done(out, "mfssd300_pruned", result, "pruned")
    info = json.loads((out / "models" / "mfssd300_pruned" / "info.json").read_text())
    result["params_after_pruning"] = info.get("params")
    return result


def _ranks(ctx: CheckContext) -> int:
    """Every GPU present (at least 2 needed), or 2 gloo processes in the CPU dry run."""
    if not ctx.cuda:
        return 2
    count = torch.cuda.device_count()
    if count < 2:
        raise CheckSkipped(f"needs at least 2 GPUs for NCCL DDP; {count} present")
    return count


def nccl_ddp(ctx: CheckContext) -> dict[str, Any]:
    """``torchrun --nproc_per_node=<GPUs>``: one model trained, evaluated and timed over every GPU."""
    ranks = _ranks(ctx)
    suite = write_suite(ctx, "ddp", batch_size=4 * ranks)
    out = ctx.workdir / "ddp"
    result = {"ranks": ranks, **run(ctx, command(ctx, suite, out, "--models", MODEL, nproc=ranks), 400)}
    expect_done(out, MODEL, result, "ddp")
    manifest = json.loads((out / "manifest.json").read_text())
    result["world_size"] = manifest.get("device", {}).get("world_size")
    expect(result["world_size"] == ranks, "the manifest does not record the DDP world size", **result)
    return result


def ddp_rank_failure(ctx: CheckContext) -> dict[str, Any]:
    """Issue 13.5: rank 1's loss turns NaN; the job ends within a bound, the earlier model stays done."""
    ranks = _ranks(ctx)
    script = ctx.workdir / "nan_on_rank1.py"
    script.write_text(DRIVER)
    suite = write_suite(ctx, "ddp_failure", batch_size=4 * ranks)
    out = ctx.workdir / "ddp_failure"
    bound = ctx.size(300, 600)
    result = {"ranks": ranks, "bound_s": bound,
              **run(ctx, command(ctx, suite, out, "--models", f"{MODEL},{NAN_MODEL}", nproc=ranks,
                                 script=script), bound)}
    result["states"] = {m: state(out, m).get("state") for m in (MODEL, NAN_MODEL)}
    expect(result["states"] == {MODEL: "done", NAN_MODEL: "failed"} and result["exit_code"] != 0,
           "expected the first model done, the NaN model failed and a non-zero exit", **result)
    expect((out / "models" / MODEL / "metrics.json").is_file(), "the earlier model lost its metrics",
           **result)
    return result


CHECKS = [
    Check("cuda_startup", cuda_startup, "issue 13.1: bench.run --device cuda, alone and under torchrun"),
    Check("device_errors", device_errors, "a GPU that is not there: exit 2 with one named line"),
    Check("resume_on_cuda", resume_on_cuda, "issue 13.2: kill -9 mid-training, then --resume on CUDA"),
    Check("pruned_on_cuda", pruned_on_cuda, "issue 13.3: mfssd300_pruned trains, prunes and fine-tunes"),
    Check("nccl_ddp", nccl_ddp, "NCCL DDP over every GPU present (torchrun)"),
    Check("ddp_rank_failure", ddp_rank_failure, "issue 13.5: a NaN on one DDP rank ends the job cleanly"),
]

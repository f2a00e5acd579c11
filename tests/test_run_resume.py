"""``kill -9`` during a run, then ``--resume``: the log rows up to the checkpoint stay byte for byte (their
``seconds`` too), only the later steps run again, and the final weights, detections and metrics equal an
uninterrupted run's (CPU, fixed seed). Each run is a real process killed with SIGKILL at a fixed point
(``tests.resume_driver``): mid-training (yolov5n), mid fine-tuning and between pruning and fine-tuning (the
tiny network with MFSSD-Pruned's plan, EMA on)."""

from __future__ import annotations

import csv
import json
import signal
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from tests import resume_driver
from tests.resume_driver import KillPoint

SMOKE = Path(__file__).resolve().parents[1] / "bench" / "suites" / "smoke.toml"


@dataclass(frozen=True)
class Case:
    model: str
    ema: bool
    kill: KillPoint
    checkpoint: tuple[str, int]  # what the killed run's checkpoint.pt holds
    resumed_steps: dict[str, int]  # what the resumed process trains

    @property
    def fake_pruning(self) -> bool:
        return self.model == "tiny_pruned"


CASES = {  # smoke: 6 iterations (3 + 3 for the pruned plan), a log row and a checkpoint every 2
    "mid_training": Case("yolov5n", False, ("checkpoint", "train", 4), ("train", 2), {"train": 4}),
    "mid_finetuning": Case("tiny_pruned", True, ("checkpoint", "finetune", 3), ("finetune", 2),
                           {"finetune": 1}),
    "between_pruning_and_finetuning": Case("tiny_pruned", True, ("step", "finetune", 0), ("sparse", 3),
                                           {"finetune": 3}),
}


def suite(root: Path, ema: bool) -> Path:
    if not ema:
        return SMOKE
    path = root / "smoke_ema.toml"
    path.write_text(f'base = "{SMOKE}"\n[recipe]\nema_decay = 0.9\n')
    return path


def argv(root: Path, case: Case, out: Path, *extra: str) -> list[str]:
    return ["--suite", str(suite(root, case.ema)), "--models", case.model, "--out", str(out),
            "--cache-dir", str(root / "cache"), "--keep-weights", "--no-report", *extra]


@pytest.fixture(scope="module")
def references(tmp_path_factory: pytest.TempPathFactory):
    """One uninterrupted run per (model, EMA), made on first use."""
    root = tmp_path_factory.mktemp("resume")
    made: dict[tuple[str, bool], Path] = {}

    def reference(case: Case) -> Path:
        key = (case.model, case.ema)
        if key not in made:
            out = root / f"reference_{case.model}_{case.ema}"
            code, steps = resume_driver.run(argv(root, case, out), out.with_suffix(".child"),
                                            fake_pruning=case.fake_pruning)
            assert code == 0, (out.with_suffix(".child") / "log.txt").read_text()
            assert sum(steps.values()) == 6
            made[key] = out / "models" / case.model
        return made[key]

    return root, reference


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def without_seconds(path: Path) -> list[dict[str, str]]:
    return [{k: v for k, v in row.items() if k != "seconds"} for row in rows(path)]


def lines_up_to(path: Path, stage: str, iteration: int) -> list[str]:
    """The header and every row logged before or at the checkpoint ``(stage, iteration)``, as text."""
    lines = path.read_text().splitlines(keepends=True)
    stages = list(dict.fromkeys(r["stage"] for r in rows(path)))
    keep = [(stages.index(r["stage"]), int(r["iteration"])) <= (stages.index(stage), iteration)
            for r in rows(path)]
    assert keep == sorted(keep, reverse=True)  # the kept rows are a prefix
    return lines[:1 + sum(keep)]


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
def test_kill_9_then_resume_reruns_only_the_steps_after_the_checkpoint(name: str, references) -> None:
    root, reference = references
    case = CASES[name]
    expected = reference(case)
    killed = root / f"killed_{name}"
    model_dir = killed / "models" / case.model
    code, _ = resume_driver.run(argv(root, case, killed), killed.with_suffix(".child"), kill=case.kill,
                                fake_pruning=case.fake_pruning)
    assert code == -signal.SIGKILL, (killed.with_suffix(".child") / "log.txt").read_text()
    assert json.loads((model_dir / "status.json").read_text())["state"] == "running"
    state = torch.load(model_dir / "checkpoint.pt", weights_only=True)
    assert (state["stage"], state["iteration"]) == case.checkpoint
    log = model_dir / "train_log.csv"
    kept = lines_up_to(log, *case.checkpoint)
    if case.kill[0] == "checkpoint":  # killed after logging the row whose checkpoint never came
        assert len(log.read_text().splitlines()) > len(kept)

    code, steps = resume_driver.run(argv(root, case, killed, "--resume"), killed.with_suffix(".resume"),
                                    fake_pruning=case.fake_pruning)
    assert code == 0, (killed.with_suffix(".resume") / "log.txt").read_text()
    assert steps == case.resumed_steps  # only the steps after the checkpoint ran again
    assert log.read_text().splitlines(keepends=True)[:len(kept)] == kept  # seconds included
    assert without_seconds(log) == without_seconds(expected / "train_log.csv")

    weights = [torch.load(d / "final.pt", weights_only=True) for d in (expected, model_dir)]
    weights = [w.get("model", w.get("state_dict")) for w in weights]
    assert weights[0].keys() == weights[1].keys()
    for key, tensor in weights[0].items():
        assert torch.equal(tensor, weights[1][key]), key
    assert (expected / "detections.json").read_text() == (model_dir / "detections.json").read_text()
    metrics = [json.loads((d / "metrics.json").read_text()) for d in (expected, model_dir)]
    assert metrics[0]["coco"] == metrics[1]["coco"] and metrics[0]["voc"] == metrics[1]["voc"]
    assert json.loads((model_dir / "status.json").read_text())["state"] == "done"

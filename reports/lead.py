"""What the report leads with (issue 11): paper numbers that need no data, reproduced in this run, and
accuracy as a learnability check instead of a ranking.

- Architecture numbers compare in every run, whatever its data and budget: seed 001 Table I's parameters,
  sizes and kept share at the paper's 21 classes (20 objects + background) and Table IV's prior counts. The
  parameter counts at the papers' class counts come from the run's resolved plan (``plan.json``: the network
  each model's plan ends in, counted by ``bench.plan``), so the report never builds a model (no torch here).
- Speed ratios between models, measured on this device, stand beside the papers' ratios (``reports.ratios``;
  the papers timed a GTX 1080Ti).
- Accuracy on a short CPU budget is a learnability check: which models learned (AP50 above
  ``LEARNED_AP50``), their loss from the first to the last logged window, and their planned against trained
  iterations. A model that did not learn under a budget that is not the papers' is "below the budget to
  learn": it is flagged, never ranked by its 0.0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from reports.papers import ARCHITECTURE_METRICS, PAPERS_DIR, SHARES_FILE, read_csv_checked
from reports.rundir import Run
from reports.tables import MISSING, fmt

LEARNED_AP50 = 5.0  # percent AP50 on the test split: clearly above what an untrained detector scores (~0)
MB = 4 / 2**20  # fp32 bytes per parameter, in MiB (the papers' "Size (MB)")


def plan_model(plan: dict[str, Any] | None, name: str) -> dict[str, Any]:
    return ((plan or {}).get("models") or {}).get(name) or {}


def load_shares() -> pd.DataFrame:
    """The papers' share definitions (``papers/shares.csv``): a model's count over another's, in %."""
    return read_csv_checked(PAPERS_DIR / SHARES_FILE, ("seed", "table", "metric", "model", "over", "note"))


def architecture_numbers(run: Run, plan: dict[str, Any] | None) -> pd.DataFrame:
    """Sizes at the papers' class counts (columns of ``reports.papers.compare``'s ``measured`` plus
    ``num_classes``), and the run-classes ``params_kept`` of Table I's definition."""
    rows: list[tuple[str, str, str, float, Any]] = []
    counts: dict[str, dict[str, int]] = {}
    for name in run.models:
        at = (plan_model(plan, name).get("params") or {}).get("at_num_classes") or {}
        counts[name] = {k: int(v) for k, v in at.items()}
        for k, n in counts[name].items():
            rows += [(name, "params", "", float(n), int(k)), (name, "size_mb", "", n * MB, int(k))]
    for share in load_shares().itertuples():  # e.g. Table I's kept % of MFSSD-Pruned over FSSD
        part, whole = counts.get(share.model, {}), counts.get(share.over, {})
        for k in set(part) & set(whole):
            rows.append((share.model, share.metric, "", 100.0 * part[k] / whole[k], int(k)))
        p, b = run.models.get(share.model), run.models.get(share.over)
        if p is not None and b is not None and p.params and b.params:
            rows.append((share.model, share.metric, "", 100.0 * p.params / b.params, pd.NA))
    return pd.DataFrame(rows, columns=["model", "metric", "class", "value", "num_classes"])


def with_architecture(measured: pd.DataFrame, run: Run, plan: dict[str, Any] | None) -> pd.DataFrame:
    """The run's numbers with the architecture numbers added; ``params_kept`` is Table I's (over FSSD),
    replacing any the run directory reader derived otherwise."""
    kept = measured[measured["metric"] != "params_kept"].assign(num_classes=pd.NA)
    extra = architecture_numbers(run, plan)
    return pd.concat([kept, extra], ignore_index=True) if len(extra) else kept


def data_free(comparison: pd.DataFrame) -> pd.DataFrame:
    """The comparison rows that need no data: architecture facts and FPS ratios."""
    return comparison[comparison["metric"].isin(ARCHITECTURE_METRICS | {"fps_ratio"})]


def complexity_table(run: Run, plan: dict[str, Any] | None) -> tuple[list[str], list[list[str]]]:
    """Parameters and FLOPs of every model: measured in this run (``complexity.json``) or planned."""
    header = ["model", "family", "input", "priors", "params (this run)", "params at 20 classes", "GFLOPs",
              "source"]
    rows = []
    for name, m in run.models.items():
        planned = plan_model(plan, name)
        at20 = ((planned.get("params") or {}).get("at_num_classes") or {}).get("20")
        gflops = (m.complexity or {}).get("gflops")
        source = "measured (complexity.json)" if gflops is not None else "planned (plan.json)"
        if gflops is None:
            gflops = (planned.get("cost") or {}).get("forward_gflops")
        params = m.params if m.params is not None else (planned.get("params") or {}).get("run")
        rows.append([name, str(m.info.get("family") or planned.get("family") or MISSING),
                     str(m.info.get("input_size") or (planned.get("input") or {}).get("size") or MISSING),
                     fmt(m.info.get("priors"), "count"), fmt(params, "count"), fmt(at20, "count"),
                     MISSING if gflops is None else f"{gflops:.2f}",
                     source if gflops is not None else MISSING])
    return header, rows


@dataclass
class Learnability:
    model: str
    planned: str
    trained: str
    stages: str  # per stage: trained / planned iterations, and whether the wall-clock cap stopped it
    first_loss: str
    last_loss: str
    ap50: str
    verdict: str
    flag: str  # "learned", "below", "not-learned", "incomplete" or "missing": the row's style


def _planned(m: Any, planned: dict[str, Any]) -> int | None:
    stages = [s.get("planned_iterations") for s in m.training if s.get("planned_iterations")]
    if stages:
        return int(sum(stages))
    return (planned.get("budget") or {}).get("iterations")


def capped_stages(run: Run) -> dict[str, list[dict[str, Any]]]:
    """Per model, the stages ``status.json`` says the wall-clock safety cap stopped (``stopped_by_time``)."""
    out = {name: [s for s in m.training if s.get("stopped_by_time")] for name, m in run.models.items()}
    return {name: stages for name, stages in out.items() if stages}


def stage_text(training: list[dict[str, Any]]) -> str:
    """``train 120 / 200 (STOPPED by the wall-clock cap); finetune 30 / 30``, from ``status.json``."""
    parts = []
    for s in training:
        planned = s.get("planned_iterations")
        text = f"{s.get('stage', '?')} {fmt(s.get('iterations'), 'count')} / {fmt(planned, 'count')}"
        if s.get("stopped_by_time"):
            text += " (STOPPED by the wall-clock cap)"
        parts.append(text)
    return "; ".join(parts) or MISSING


def _losses(log: pd.DataFrame | None) -> tuple[float | None, float | None]:
    if log is None or "loss" not in log or log.empty:
        return None, None
    loss = pd.to_numeric(log["loss"], errors="coerce").dropna()
    return (None, None) if loss.empty else (float(loss.iloc[0]), float(loss.iloc[-1]))


def learnability(run: Run, plan: dict[str, Any] | None) -> list[Learnability]:
    """One row per model in suite order (never sorted by accuracy)."""
    paper_budget = bool(run.manifest.get("budget", {}).get("paper_budget"))
    rows = []
    for name, m in run.models.items():
        planned = _planned(m, plan_model(plan, name))
        trained = m.trained_iterations
        first, last = _losses(m.train_log)
        ap50 = ((m.metrics or {}).get("coco") or {}).get("AP50")
        ap50 = None if ap50 is None or ap50 < 0 else 100 * ap50
        capped = any(s.get("stopped_by_time") for s in m.training)
        short = capped or (planned is not None and trained is not None and trained < planned)
        if m.state != "done":
            verdict, flag = f"{m.state}" + (f": {m.error}" if m.error else ""), "missing"
        elif ap50 is not None and ap50 >= LEARNED_AP50:
            verdict, flag = "learned", "learned"
        elif paper_budget:
            verdict, flag = "did not learn (the papers' budget)", "not-learned"
        elif planned == 0:
            verdict, flag = "below the budget to learn: not trained (a smoke budget of 0 iterations)", "below"
        else:
            verdict, flag = "below the budget to learn", "below"
        scored, test = m.scored_images, (run.manifest.get("data") or {}).get("splits", {}).get("test")
        if m.state == "done" and scored is not None and test and scored < test:
            verdict += f"; scored on the first {scored} of the {test} test images"
        if short:
            why = " (stopped by the wall-clock safety cap)" if capped else ""
            verdict += f"; ⚠ BUDGET NOT COMPLETED{why}"
            flag = "incomplete" if flag != "missing" else flag
        loss_first = MISSING if first is None else f"{first:.3f}"
        loss_last = MISSING if last is None else f"{last:.3f}" + (
            f" ({100 * (last - first) / first:+.0f} %)" if first else "")
        rows.append(Learnability(name, fmt(planned, "count"), fmt(trained, "count"), stage_text(m.training),
                                 loss_first, loss_last, fmt(ap50), verdict, flag))
    return rows

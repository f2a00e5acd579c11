"""``python -m bench.gpu_check --table RESULT.json``: the README's rows, from a measured result only."""

from __future__ import annotations

from typing import Any


def _get(tree: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(tree, dict) or key not in tree:
            return None
        tree = tree[key]
    return tree


def headline(document: dict[str, Any]) -> list[tuple[str, Any]]:
    """(figure, value) pairs of the checks that passed, in a fixed order."""
    results = {c["name"]: c.get("result") for c in document.get("checks", []) if c.get("status") == "passed"}
    pairs: list[tuple[str, Any]] = []
    for precision in ("amp", "fp32"):
        tv = _get(results, "ssd300_throughput_vs_torchvision", precision)
        if tv:
            pairs.append((f"SSD300 training, batch 32, {precision}: images/s ours / torchvision (ratio)",
                          f"{tv['ours_images_per_s']} / {tv['torchvision_images_per_s']} "
                          f"({tv['ratio_ours_over_torchvision']})"))
    for model, values in (results.get("amp_training_step") or {}).items():
        pairs.append((f"AMP training iteration, {model} ({values['family']}), batch 8",
                      f"{values['ms_per_iteration']} ms"))
    for model in ("ssd300", "yolov5nu"):
        layout = _get(results, "channels_last_cudnn_benchmark", model)
        if layout:
            pairs.append((f"{model} AMP step speed-up: channels_last / cudnn.benchmark",
                          f"x{layout['channels_last_speedup_train']} / x{layout['benchmark_speedup_train']}"))
    ratio = _get(results, "cuda_event_timing", "event_vs_synchronised_wall_clock")
    if ratio is not None:
        pairs.append(("CUDA-event latency / synchronised wall clock (SSD300 forward, batch 8)", ratio))
    slim = results.get("amp_slimming_l1")
    if slim:
        pairs.append(("slimming L1 step under AMP / (lr * reg)", slim["median_step_over_lr_reg"]))
    return pairs


def markdown_rows(document: dict[str, Any]) -> str:
    env = document.get("environment", {})
    if document.get("skipped"):
        return f"(skipped: {document['skipped']})"
    gpu = env.get("gpu_name") or "cpu (dry run)"
    where = (f"{gpu}, driver {env.get('driver')}, CUDA {env.get('cuda_build')}, cuDNN {env.get('cudnn')}, "
             f"torch {env.get('torch')}, measured {document.get('started', '?')[:10]}")
    lines = [f"Measured on {where}:", "", "| check | status | seconds |", "|---|---|---|"]
    checks = document.get("checks", [])
    lines += [f"| `{c['name']}` | {c['status']} | {c.get('seconds', '')} |" for c in checks]
    lines += ["", "| figure | value |", "|---|---|"]
    lines += [f"| {figure} | {value} |" for figure, value in headline(document)]
    memory = next((c.get("result") for c in document.get("checks", [])
                   if c["name"] == "peak_memory" and c.get("status") == "passed"), None)
    if memory:
        lines += ["", "| model | suites | input | train batch | train GiB | eval GiB | throughput GiB |",
                  "|---|---|---|---|---|---|---|"]
        lines += [f"| {r['model']} | {', '.join(r['suites'])} | {r['input_size']} | {r['train_batch']} | "
                  f"{r['train']['allocated_gib']} | {r['evaluate']['allocated_gib']} | "
                  f"{r['throughput']['allocated_gib']} |" for r in memory["rows"]]
    return "\n".join(lines)

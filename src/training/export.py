"""Shipping a trained network: best validated checkpoint -> fp16 weights + record.

Writes ``<name>.pt`` (weights, the config they were trained with, the training record)
and ``<name>.md`` beside it: how the weights were trained (commands, data, steps, time)
and their validation figures, for people.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import torch

from ..errors import ModelAngeloError
from ..model.weights import save_weights


def export_best(run_dir: Path, out_path: Path, *, network: Callable[[dict], str], data: str,
                note: str = "", adjust_config: Callable[[dict, dict], None] | None = None,
                extra: dict | None = None) -> dict:
    """Export ``run_dir/best.pt``; ``network(config)`` describes the architecture;
    ``adjust_config(config, validation)`` may set inference settings tuned on validation."""
    run_dir, out_path = Path(run_dir), Path(out_path)
    best = run_dir / "best.pt"
    if not best.exists():
        raise ModelAngeloError(f"no validated checkpoint in {run_dir} (best.pt missing)")
    blob = torch.load(best, map_location="cpu", weights_only=False)
    latest_path = run_dir / "checkpoint.pt"
    latest = (torch.load(latest_path, map_location="cpu", weights_only=False)
              if latest_path.exists() else {})
    commands_file = run_dir / "commands.txt"
    commands = commands_file.read_text().splitlines() if commands_file.exists() else []
    config = blob["config"]
    if adjust_config is not None:
        adjust_config(config, blob["validation"])
    record = {
        "network": network(config),
        "parameters": int(sum(v.numel() for v in blob["model"].values())),
        "steps": blob["step"],
        "total_steps_run": latest.get("step"),
        **({"init_from": latest["init_from"]} if latest.get("init_from") else {}),
        "train_seconds": round(latest.get("elapsed", 0.0)),
        "validation": blob["validation"],
        "data": data,
        "commands": commands,
        "exported": time.strftime("%Y-%m-%d %H:%M"),
        "note": note,
        **(extra or {}),
    }
    save_weights(out_path, blob["model"], config, record)
    out_path.with_suffix(".md").write_text(record_markdown(out_path.stem, record))
    return record


def record_markdown(name: str, record: dict) -> str:
    lines = [
        f"# Training record: `{name}.pt`",
        "",
        f"- network: {record['network']} ({record['parameters'] / 1e6:.2f}M parameters, "
        "fp16 on disk)",
        f"- data: {record['data']}",
        f"- steps: {record['steps']} (best validation; {record.get('total_steps_run')} run in "
        f"all, {record['train_seconds'] / 3600:.2f} h of training; the commands below say "
        "on which machines)",
        f"- exported: {record['exported']}",
    ]
    if record.get("init_from"):
        lines.append(f"- started from the weights of {record['init_from']}")
    if record.get("note"):
        lines.append(f"- note: {record['note']}")
    for change in record.get("retuned", []):
        lines.append(f"- peak settings re-tuned on the validation maps {change['date']} "
                     f"(weights unchanged; before: {change['before']})")
    lines += ["", "## Validation (simulated maps of the 'val' split)", "", "| figure | value |",
              "|---|---|"]
    def shown(value) -> str:
        return f"{value:.4f}" if isinstance(value, float) else str(value)

    for key, value in record["validation"].items():
        if isinstance(value, dict):  # e.g. by_resolution: one row per resolution
            for sub, figures in value.items():
                text = (", ".join(f"{k} {shown(v)}" for k, v in figures.items())
                        if isinstance(figures, dict) else shown(figures))
                lines.append(f"| {key} {sub} | {text} |")
        else:
            lines.append(f"| {key} | {shown(value)} |")
    lines += ["", "## Commands (run folder `commands.txt`; each run resumes the last)", "",
              "```"] + record["commands"] + ["```", ""]
    if record.get("data_config"):
        lines += ["## Data settings", "", "```json", json.dumps(record["data_config"], indent=1),
                  "```", ""]
    return "\n".join(lines)

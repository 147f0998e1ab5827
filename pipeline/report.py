"""The results table: every finished run under data/runs/, grouped, scratch against distilled.

Runs that differ only in seed form one row (mean ± sample std over seeds). Each
distilled row is compared with the scratch row (ALPHA = 0) of the same student and
epochs, so a gain is only ever claimed against the same schedule.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path

from pipeline.files import atomic_path, read_json

__all__ = ["collect_runs", "summarize", "render_markdown", "render_exports", "write_report"]


def collect_runs(runs_dir: Path) -> list[dict]:
    """metrics.json of every finished run (directories being written are skipped: they start with '.')."""
    runs = []
    for path in sorted(Path(runs_dir).glob("[!.]*/metrics.json")):
        metrics = read_json(path)
        metrics["run"] = path.parent.name
        runs.append(metrics)
    return runs


def _arm(run: dict) -> str:
    return "scratch" if run["alpha"] == 0 else f"KD T={run['T']:g} ALPHA={run['alpha']:g}"


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarize(runs: list[dict]) -> list[dict]:
    """One row per (student, epochs, arm), scratch first, with the difference to scratch in pp."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in runs:
        groups[(r["student"], r["epochs"], _arm(r))].append(r)
    rows = []
    for (student, epochs, arm), members in groups.items():
        acc, acc_std = _mean_std([100 * m["test_acc"] for m in members])
        rows.append({
            "student": student, "epochs": epochs, "arm": arm, "params": members[0]["params"],
            "seeds": sorted(m["seed"] for m in members), "acc": acc, "acc_std": acc_std,
            "agreement": 100 * statistics.fmean(m["agreement_with_teacher"] for m in members),
            "seconds_per_epoch": statistics.fmean(m["seconds_per_epoch"] for m in members),
            "teacher_acc": 100 * members[0]["teacher_test_acc"],
        })
    scratch = {(r["student"], r["epochs"]): r["acc"] for r in rows if r["arm"] == "scratch"}
    for r in rows:
        base = scratch.get((r["student"], r["epochs"]))
        r["delta"] = None if base is None or r["arm"] == "scratch" else r["acc"] - base
    rows.sort(key=lambda r: (r["params"], r["student"], r["epochs"], r["arm"] != "scratch", r["arm"]))
    return rows


def render_markdown(rows: list[dict]) -> str:
    if not rows:
        return "No finished student runs yet: run 'make student' or 'make demo'.\n"
    teachers = sorted({f"{r['teacher_acc']:.2f}%" for r in rows})
    lines = [
        f"Teacher test accuracy: {', '.join(teachers)}",
        "",
        "| student | params | epochs | arm | seeds | test acc % (mean ± std) | Δ vs scratch (pp) "
        "| agreement with teacher % | s/epoch |",
        "|---|---:|---:|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        delta = "—" if r["delta"] is None else f"{r['delta']:+.2f}"
        lines.append(
            f"| {r['student']} | {r['params']:,} | {r['epochs']} | {r['arm']} | "
            f"{' '.join(map(str, r['seeds']))} | {r['acc']:.2f} ± {r['acc_std']:.2f} | {delta} | "
            f"{r['agreement']:.1f} | {r['seconds_per_epoch']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def _cell(values: dict, key: str, fmt: str) -> str:
    """A formatted table cell, or a dash for a format that was not exported."""
    return format(values[key], fmt) if key in values else "—"


def render_exports(runs_dir: Path) -> str:
    """The edge-export table: one row per run with an export.json (written by `make export`)."""
    exports = [(p.parent.parent.name, read_json(p)) for p in sorted(Path(runs_dir).glob("[!.]*/export/export.json"))]
    if not exports:
        return ""
    lines = ["", "## Edge export (batch 1, one thread; `make export`)", "",
             "| run | ONNX KB | int8 KB | int8 / float32 size | accuracy % eager → int8 "
             "| eager µs | TorchScript µs | ONNX Runtime µs | int8 µs |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for run, e in exports:
        size = {f: e["files"][f]["bytes"] / 1024 for f in e["files"]}
        lat, acc = e["latency_us_batch1_1thread"], e["test_acc"]
        int8_acc = _cell({k: 100 * v for k, v in acc.items()}, "int8", ".2f")
        lines.append(f"| {run} | {_cell(size, 'onnx', '.1f')} | {_cell(size, 'int8', '.1f')} | "
                     f"{_cell(e, 'int8_size_ratio', '.3f')} | {100 * acc['eager']:.2f} → {int8_acc} | "
                     f"{lat['eager']:.0f} | {_cell(lat, 'torchscript', '.0f')} | {_cell(lat, 'onnx', '.0f')} | "
                     f"{_cell(lat, 'int8', '.0f')} |")
    return "\n".join(lines) + "\n"


def write_report(runs_dir: Path, out: Path) -> str:
    """Write the Markdown tables to ``out`` and return them."""
    text = ("# softcache results\n\n" + render_markdown(summarize(collect_runs(runs_dir)))
            + render_exports(runs_dir))
    with atomic_path(out) as tmp:
        tmp.write_text(text)
    return text

"""The language-model students' part of the report: scratch against distilled in test bits per byte,
their edge exports, and what they write.

Runs that differ only in seed form one row (mean ± sample std): runs of another text (by its fingerprint)
or of another teacher are never averaged as seeds of one arm. A distilled row is compared with the scratch
row of the same student, prepared text and steps, so a gain is only claimed at equal optimiser steps on the
same tokens. The sample shows a user the model, not only a number: each exported run's
greedy continuation of a held-out prompt (``export.json``'s ``sample``, written by the export).
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from pathlib import Path

from pipeline.files import read_json
from pipeline.names import SELF_METHOD_RECORD
from pipeline.results.records import check_record, mean_std

__all__ = ["is_lm_record", "collect_lm_runs", "summarize_lm", "render_lm"]


def is_lm_record(metrics: dict) -> bool:
    """Whether a run's metrics.json is a language-model student's (they have their own table)."""
    return metrics.get("kind") == "lm"


# What every finished LM run's metrics.json holds (written by pipeline.student.lm_distill).
LM_RUN_RECORD = {"student": str, "steps": int, "seed": int, "T": float, "alpha": float, "topk": int, "text": str,
                 "test_bits_per_byte": float, "teacher_agreement": float, "tokens_per_second": float, "params": int}


def collect_lm_runs(runs_dir: Path) -> list[dict]:
    """Every finished LM run's metrics; one that softcache did not write is refused in one line."""
    runs = []
    for path in sorted(Path(runs_dir).glob("[!.]*/metrics.json")):
        metrics = read_json(path)
        if not is_lm_record(metrics):
            continue
        check_record(path, metrics, LM_RUN_RECORD, "an LM run")
        runs.append({**metrics, "run": path.parent.name, "data": Path(metrics["text"]).stem})
    return runs


def _arm(run: dict) -> str:
    if run.get("method") == SELF_METHOD_RECORD["pskd"]:       # no teacher: its own earlier state taught it
        return f"PS-KD ALPHA_T={run['alpha_T']:g}"
    return "scratch" if run["alpha"] == 0 else f"KD T={run['T']:g} ALPHA={run['alpha']:g} k={run['topk']}"


def _text(run: dict) -> str:
    """Which text a run was trained and scored on: its fingerprint (two texts may share a file name)."""
    return str(run.get("text_fingerprint") or run["data"])


def _teacher(run: dict) -> str:
    """Who taught a distilled run ('' for scratch, which learns from no teacher); records made before runs
    named their teacher fall back to their cache's fingerprint."""
    return "" if run["alpha"] == 0 else str(run.get("teacher_fingerprint") or run.get("cache_fingerprint", ""))


def summarize_lm(runs: list[dict]) -> list[dict]:
    """One row per (student, text, steps, arm, teacher), scratch first, with the gain over scratch in bits per
    byte (positive: the distilled student predicts the held-out text better). Only runs that differ in their
    seed alone are averaged: another text, another teacher or another step count is another row."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in runs:
        groups[(r["student"], _text(r), r["steps"], _arm(r), _teacher(r))].append(r)
    rows = []
    for (student, text, steps, arm, teacher), members in groups.items():
        data = members[0]["data"]
        bpb, bpb_std = mean_std([m["test_bits_per_byte"] for m in members])
        rows.append({"student": student, "data": data, "text": text, "steps": steps, "arm": arm,
                     "teacher_fingerprint": teacher, "params": members[0]["params"],
                     "seeds": sorted(m["seed"] for m in members), "bpb": bpb, "bpb_std": bpb_std,
                     "agreement": 100 * statistics.fmean(m["teacher_agreement"] for m in members),
                     "teacher": members[0].get("teacher_test_bits_per_byte", math.nan),
                     "tokens_per_second": statistics.fmean(m["tokens_per_second"] for m in members),
                     "runs": {m["seed"]: m["run"] for m in members}})
    scratch = {(r["student"], r["text"], r["steps"]): r["bpb"] for r in rows if r["arm"] == "scratch"}
    for r in rows:
        base = scratch.get((r["student"], r["text"], r["steps"]))
        r["gain"] = None if base is None or r["arm"] == "scratch" else base - r["bpb"]
    rows.sort(key=lambda r: (r["params"], r["student"], r["data"], r["text"], r["steps"], r["arm"] != "scratch",
                             r["arm"], r["teacher_fingerprint"]))
    return rows


def _exports(runs_dir: Path, rows: list[dict]) -> list[tuple[str, dict]]:
    runs = [run for r in rows for run in r["runs"].values()]
    return [(run, read_json(p)) for run in runs if (p := Path(runs_dir) / run / "export" / "export.json").is_file()]


def render_lm(runs_dir: Path) -> str:
    """The Markdown section for every finished LM run under ``runs_dir`` ('' when there is none)."""
    rows = summarize_lm(collect_lm_runs(runs_dir))
    if not rows:
        return ""
    out = ["", "## Language-model students (test bits per byte, lower is better)", "",
           "| student | params | text | steps | arm | seeds | test bits/byte (mean ± std) | gain over scratch | "
           "teacher (fingerprint) | agreement with teacher % | tokens/s |", "|---|---:|---|---:|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        gain = "—" if r["gain"] is None else f"{r['gain']:+.3f}"
        teacher = "—" if r["arm"] == "scratch" else (
            ("?" if math.isnan(r["teacher"]) else f"{r['teacher']:.3f}") + f" ({r['teacher_fingerprint'][:8]})")
        out.append(f"| {r['student']} | {r['params']:,} | {r['data']} | {r['steps']} | {r['arm']} | "
                   f"{' '.join(map(str, r['seeds']))} | {r['bpb']:.3f} ± {r['bpb_std']:.3f} | {gain} | {teacher} | "
                   f"{r['agreement']:.1f} | {r['tokens_per_second']:,.0f} |")
    exports = _exports(runs_dir, rows)
    if exports:
        out += ["", "### Edge export (`make export`; ONNX Runtime, one thread)", "",
                "| run | ONNX KB | max abs logit diff | int8 KB | int8 change in bits/byte | greedy tokens/s |",
                "|---|---:|---:|---:|---:|---:|"]
        for run, e in exports:
            onnx, int8 = e["files"].get("onnx"), e["files"].get("int8")
            refused = e.get("refused", {}).get("int8")
            int8_cell = (f"{int8['bytes'] / 1024:.0f}", f"{int8['bits_per_byte_change']:+.4f}") if int8 else (
                "refused", f"{refused['bits_per_byte_change']:+.4f} (budget {refused['budget']:g})" if refused else "—")
            onnx = onnx or {"bytes": math.nan, "max_abs_diff": math.nan}      # asked for TorchScript only
            out.append(f"| {run} | {onnx['bytes'] / 1024:.0f} | {onnx['max_abs_diff']:.1e} | {int8_cell[0]} | "
                       f"{int8_cell[1]} | {e['greedy_tokens_per_second_1thread']:.0f} |")
        shown = {run: e["sample"] for run, e in exports if e.get("sample")}
        firsts = [(r["arm"], r["runs"][r["seeds"][0]]) for r in rows]     # each row's lowest seed
        samples = [(arm, run, shown[run]) for arm, run in firsts if run in shown]
        if samples:
            out += ["", "### What they write (greedy, from the start of a held-out test window; the student's "
                    "continuation between ⟨ ⟩)", ""]
            for arm, run, sample in samples:
                out += [f"{arm} (`{run}`):", "", "```text", sample["prompt"] + "⟨" + sample["continuation"] + "⟩",
                        "```", ""]
    return "\n".join(out) + "\n"

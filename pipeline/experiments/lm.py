"""experiment-lm: what distillation from the per-token cache buys small language models, measured.

For each student, T and ALPHA are chosen on the validation split (tuning runs, never the test split); then
scratch (ALPHA = 0) and distilled runs train at equal optimiser steps (so equal tokens) over every seed.
The report gives test bits per byte as mean ± std, the difference of the means against twice its standard
error, how many steps the distilled runs needed to reach scratch's final validation figure (from the curves
over the whole schedule, not only the end), top-1 agreement with the teacher, and the price of sparsity:
the first student distilled from the cache read at each k (one cache serves every smaller k exactly), with
the bytes per position a cache at that k takes. Runs go through the sweep's runner, so a killed experiment
resumes with its finished runs kept.
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
from pathlib import Path

from pipeline.cache.lm_format import grid_index
from pipeline.cache.lm_reader import TokenCache
from pipeline.config import LMExperimentConfig, LMStudentConfig
from pipeline.experiments.base import run_all
from pipeline.files import atomic_path
from pipeline.names import lm_run_name
from pipeline.results.records import mean_std
from pipeline.settings import threads_per_run
from pipeline.student.lm_distill import train_lm_student

__all__ = ["run_lm_experiment", "plan_tuning", "plan_final", "lm_report", "REPORT"]

REPORT = "lm-experiment"


def lm_report(reports_dir: Path, suffix: str = ".md") -> Path:
    return Path(reports_dir) / f"{REPORT}{suffix}"


def _run(cfg: LMExperimentConfig, out: Path, student: str, seed: int, T: float, alpha: float, topk: int = 0) -> LMStudentConfig:
    base = cfg.student
    text, cache = Path(base.text).stem, Path(base.cache).stem
    teacher = cache[len(text):] if cache.startswith(text) else f"-{cache}"
    name = lm_run_name(student, T, alpha, seed, base.steps, text, teacher if alpha else "", topk)
    return dataclasses.replace(base, out_dir=out / name, student=student, seed=seed, T=T if alpha else base.T,
                               alpha=alpha, topk=topk, threads=threads_per_run(cfg.threads, cfg.jobs))


def plan_tuning(cfg: LMExperimentConfig) -> list[LMStudentConfig]:
    return [_run(cfg, cfg.tuning_dir, student, seed, T, alpha) for student in cfg.students for T in cfg.Ts
            for alpha in cfg.alphas for seed in cfg.tune_seeds]


def _choose(tuning: list[dict]) -> dict[str, dict]:
    """Per student, the (T, ALPHA) with the lowest mean validation bits per byte over the tuning seeds."""
    scores: dict[tuple, list[float]] = {}
    for m in tuning:
        scores.setdefault((m["student"], m["T"], m["alpha"]), []).append(m["val_bits_per_byte"])
    choice: dict[str, dict] = {}
    for (student, T, alpha), values in scores.items():
        score = statistics.fmean(values)
        if student not in choice or score < choice[student]["val_bits_per_byte"]:
            choice[student] = {"T": T, "alpha": alpha, "val_bits_per_byte": score}
    return choice


def _sparsity_ks(cfg: LMExperimentConfig, cache: TokenCache) -> list[int]:
    """The k read for the sparsity arm: those of ``topks`` below what the cache holds (its own k is the main
    distilled arm)."""
    held = int(cache.attrs["topk"]) or int(cache.attrs["vocab_size"])
    return [k for k in cfg.topks if 0 < k < held]


def plan_final(cfg: LMExperimentConfig, choice: dict[str, dict], ks: list[int]) -> list[LMStudentConfig]:
    runs = []
    for student in cfg.students:
        c = choice[student]
        for seed in cfg.seeds:
            runs += [_run(cfg, cfg.runs_dir, student, seed, c["T"], 0.0),
                     _run(cfg, cfg.runs_dir, student, seed, c["T"], c["alpha"])]
    first = choice[cfg.students[0]]
    runs += [_run(cfg, cfg.runs_dir, cfg.students[0], seed, first["T"], first["alpha"], k) for k in ks for seed in cfg.seeds]
    return runs


def _steps_to_reach(run: dict, target: float) -> int | None:
    """The first evaluated step whose validation bits per byte is at or below ``target`` (None: never)."""
    return next((h["step"] for h in run["history"] if h["val_bits_per_byte"] <= target), None)


def _summary(final: list[dict], cfg: LMExperimentConfig) -> list[dict]:
    rows = []
    for student in cfg.students:
        scratch = [m for m in final if m["student"] == student and m["alpha"] == 0]
        kd = [m for m in final if m["student"] == student and m["alpha"] > 0 and m["topk"] == scratch[0]["topk"]]
        s, d = ([m["test_bits_per_byte"] for m in arm] for arm in (scratch, kd))
        se = math.sqrt(statistics.variance(s) / len(s) + statistics.variance(d) / len(d)) if len(s) > 1 else float("nan")
        by_seed = {m["seed"]: m for m in scratch}
        reach = [_steps_to_reach(m, by_seed[m["seed"]]["history"][-1]["val_bits_per_byte"]) for m in kd]
        rows.append({"student": student, "params": scratch[0]["params"], "T": kd[0]["T"], "alpha": kd[0]["alpha"],
                     "scratch": mean_std(s), "distilled": mean_std(d), "gain": statistics.fmean(s) - statistics.fmean(d),
                     "two_se": 2 * se, "steps": cfg.student.steps,
                     "steps_to_scratch": None if None in reach else statistics.fmean(reach),
                     "agreement": mean_std([m["teacher_agreement"] for m in kd]),
                     "scratch_agreement": mean_std([m["teacher_agreement"] for m in scratch]),
                     "curves": {arm: [statistics.fmean(h[i]["val_bits_per_byte"] for h in (m["history"] for m in runs))
                                      for i in range(len(runs[0]["history"]))]
                                for arm, runs in (("scratch", scratch), ("distilled", kd))},
                     "curve_steps": [h["step"] for h in scratch[0]["history"]]})
    return rows


def _sparsity(final: list[dict], cfg: LMExperimentConfig, ks: list[int], held: int) -> list[dict]:
    student = cfg.students[0]
    scratch = statistics.fmean(m["test_bits_per_byte"] for m in final if m["student"] == student and m["alpha"] == 0)
    rows = []
    for k in [*ks, held]:
        runs = [m for m in final if m["student"] == student and m["alpha"] > 0 and m["topk"] == k]
        rows.append({"k": k, "bytes_per_position": runs[0]["cache_bytes_per_position"],
                     "test_bits_per_byte": mean_std([m["test_bits_per_byte"] for m in runs]),
                     "gain": scratch - statistics.fmean(m["test_bits_per_byte"] for m in runs)})
    return rows


def _figure(rows: list[dict], reports_dir: Path) -> str | None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, axes = plt.subplots(1, len(rows), figsize=(5 * len(rows), 3.6), squeeze=False)
    for ax, row in zip(axes[0], rows):
        for arm, style in (("scratch", "--"), ("distilled", "-")):
            ax.plot(row["curve_steps"], row["curves"][arm], style, label=arm)
        ax.set(title=f"{row['student']} ({row['params']:,} params)", xlabel="step", ylabel="val bits per byte")
        ax.legend()
    fig.tight_layout()
    name = f"{REPORT}.png"
    with atomic_path(reports_dir / name) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return name


def _render(cfg: LMExperimentConfig, cache: TokenCache, choice: dict, rows: list[dict], sparsity: list[dict],
            figure: str | None) -> str:
    a = cache.attrs
    pm = lambda v, d=3: f"{v[0]:.{d}f} ± {v[1]:.{d}f}"  # noqa: E731
    out = [f"# What distillation buys LM students ({len(cfg.seeds)} seeds, {cfg.student.steps} steps each)", "",
           f"Teacher {a.get('teacher')} (validation {float(a.get('teacher_val_bits_per_byte', math.nan)):.3f}, "
           f"test {float(a.get('teacher_test_bits_per_byte', math.nan)):.3f} bits per byte), "
           f"cache k = {a['topk'] or 'dense'}, {a['dtype']}, grid T = "
           f"{' '.join(f'{t:g}' for t in cache.temperatures)}, V = {a['vocab_size']:,}, tokenizer {a.get('tokenizer')}. "
           f"T and ALPHA chosen per student on the validation split (seeds {', '.join(map(str, cfg.tune_seeds))}); "
           f"figures are test bits per byte, lower is better.", "",
           "| student | params | T | ALPHA | scratch | distilled | gain | 2·SE | steps to scratch's final | "
           "agreement with teacher (scratch → distilled) |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        reach = "never" if r["steps_to_scratch"] is None else f"{r['steps_to_scratch']:.0f} ({r['steps_to_scratch'] / r['steps']:.2f}×)"
        out.append(f"| {r['student']} | {r['params']:,} | {r['T']:g} | {r['alpha']:g} | {pm(r['scratch'])} | "
                   f"{pm(r['distilled'])} | {r['gain']:+.3f} | {r['two_se']:.3f} | {reach} | "
                   f"{100 * r['scratch_agreement'][0]:.1f}% → {100 * r['agreement'][0]:.1f}% |")
    out += ["", "Gain: scratch's mean minus distilled's; it counts as real where it exceeds 2·SE (the standard error "
            "of the difference of the means).", ""]
    if sparsity:
        out += [f"## The price of sparsity ({cfg.students[0]}, the same T and ALPHA)", "",
                "| k | bytes / position | test bits per byte | gain over scratch |", "|---:|---:|---:|---:|"]
        out += [f"| {s['k']} | {s['bytes_per_position']:.0f} | {pm(s['test_bits_per_byte'])} | {s['gain']:+.3f} |"
                for s in sparsity]
        out.append("")
    out += ["## Choosing T and ALPHA (validation bits per byte)", "", "| student | T | ALPHA | val |", "|---|---:|---:|---:|"]
    out += [f"| {s} | {c['T']:g} | {c['alpha']:g} | {c['val_bits_per_byte']:.3f} |" for s, c in choice.items()]
    if figure:
        out += ["", f"![validation bits per byte over the schedule]({figure})"]
    return "\n".join(out) + "\n"


def run_lm_experiment(cfg: LMExperimentConfig, on_result=None) -> dict:
    """Tune, train every final run (JOBS at a time; finished ones kept), and write the report."""
    cache = TokenCache(cfg.student.cache)
    for T in cfg.Ts:                   # each on the grid: one line naming it, before any run
        grid_index(cache.temperatures, T)
    run = lambda planned: run_all(planned, cfg.reports_dir, cfg.jobs, cache, on_result,  # noqa: E731
                                  train=train_lm_student, summary=False)
    choice = _choose(run(plan_tuning(cfg)))
    ks = _sparsity_ks(cfg, cache)
    final = run(plan_final(cfg, choice, ks))
    held = int(cache.attrs["topk"]) or int(cache.attrs["vocab_size"])
    rows, sparsity = _summary(final, cfg), (_sparsity(final, cfg, ks, held) if ks else [])
    cfg.reports_dir.mkdir(parents=True, exist_ok=True)
    figure = _figure(rows, cfg.reports_dir)
    record = {"choice": choice, "rows": rows, "sparsity": sparsity, "cache": str(cfg.student.cache),
              "cache_fingerprint": cache.fingerprint}
    with atomic_path(lm_report(cfg.reports_dir, ".json")) as tmp:
        tmp.write_text(json.dumps(record, indent=1))
    with atomic_path(lm_report(cfg.reports_dir)) as tmp:
        tmp.write_text(_render(cfg, cache, choice, rows, sparsity, figure))
    return record


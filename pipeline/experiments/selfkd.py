"""The self-distillation experiment: which teacher-free method pays, beside scratch and the cached teacher.

For every student, at full labels and with hard labels on only ``few_labels`` rows:

    scratch   cross-entropy on the labelled rows (the student stage, ALPHA=0)
    PS-KD     the previous epoch teaches              ALPHA_T chosen from 0.5, 0.8 (paper: 0.8)
    BYOT      branches on the student's stages teach  BYOT_ALPHA chosen from 0.1, 0.3 (paper: 0.1)
    CS-KD     a same-class image teaches              CSKD_LAMBDA chosen from 1, 3 (paper: 1)
    KD        the cached teacher's soft targets       T x ALPHA chosen from the grid

Every teacher-free arm and scratch train on the same labelled rows with the same recipe and epochs
(EPOCHS at full labels, ``few_epochs`` on the few labelled rows, where an epoch is a few steps). The KD
arm trains on every row, the unlabelled ones through the teacher's soft term alone, for EPOCHS: what
the cache gives a user with few labels. Settings are chosen on held-out training rows (tuning seeds);
test accuracy over the final seeds is reported once, with the difference to scratch, twice its
standard error, and each arm's seconds per epoch against scratch's.

Runs go through :func:`pipeline.experiments.sweep.run_planned`: JOBS at a time, and a killed
experiment resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections import defaultdict
from pathlib import Path

from pipeline.cache.reader import LogitCache
from pipeline.config import SelfDistillConfig, SelfKDExperimentConfig, StudentConfig
from pipeline.experiments.base import run_all, teacher_line
from pipeline.files import atomic_path, write_json
from pipeline.names import SELF_METHOD_KNOBS, SELF_METHOD_RECORD
from pipeline.results.plots import selfkd_curves
from pipeline.settings import threads_per_run
from pipeline.student.distill import train_student
from pipeline.student.self_distill import METHOD_NAMES, self_distill

__all__ = ["SELF_GRIDS", "run_selfkd_experiment", "selfkd_report", "plan_tuning", "train_any"]

REPORT = "selfkd-experiment"
# Each teacher-free method's main setting and the values it is chosen from (the paper's first).
SELF_GRIDS = {"pskd": ("alpha_T", (0.8, 0.5)), "byot": ("byot_alpha", (0.1, 0.3)), "cskd": ("cskd_lambda", (1.0, 3.0))}
ARMS = ("scratch", "pskd", "byot", "cskd", "kd")
_METHOD_OF_RECORD = {record: method for method, record in SELF_METHOD_RECORD.items()}


def selfkd_report(reports_dir: Path, suffix: str = ".md") -> Path:
    return Path(reports_dir) / f"{REPORT}{suffix}"


def train_any(cfg, progress: bool = False) -> dict:
    """One planned run: a student-stage run (scratch, KD) or a self-distillation run."""
    return self_distill(cfg, progress=progress) if isinstance(cfg, SelfDistillConfig) else train_student(cfg, progress)


def _arm_of(m: dict) -> str:
    return _METHOD_OF_RECORD.get(m.get("method"), "scratch" if m["alpha"] == 0 else "kd")


def _self(cfg: SelfKDExperimentConfig, method: str, student: str, seed: int, labels: int | None, value: float,
          tuning: bool) -> SelfDistillConfig:
    shared = cfg.student
    run = SelfDistillConfig(dataset=shared.dataset, out_dir=Path("."), student=student, method=method, seed=seed,
                            epochs=shared.epochs if labels is None else cfg.few_epochs, augment=shared.augment,
                            batch_size=shared.batch_size, lr=shared.lr, weight_decay=shared.weight_decay,
                            holdout=cfg.holdout if tuning else 0, labels=labels,
                            threads=threads_per_run(cfg.threads, cfg.jobs), **{SELF_GRIDS[method][0]: value})
    return dataclasses.replace(run, out_dir=(cfg.tuning_dir if tuning else cfg.runs_dir) / run.run_name)


def _student(cfg: SelfKDExperimentConfig, student: str, seed: int, labels: int | None, T: float, alpha: float,
             tuning: bool) -> StudentConfig:
    epochs = cfg.student.epochs if labels is None or alpha else cfg.few_epochs   # few-label scratch: as self arms
    run = dataclasses.replace(cfg.student, student=student, seed=seed, T=float(T), alpha=float(alpha), labels=labels,
                              epochs=epochs, replay=0, holdout=cfg.holdout if tuning else 0,
                              threads=threads_per_run(cfg.threads, cfg.jobs))
    return dataclasses.replace(run, out_dir=(cfg.tuning_dir if tuning else cfg.runs_dir) / run.run_name)


def _settings(cfg: SelfKDExperimentConfig) -> tuple[int | None, ...]:
    return (None, cfg.few_labels)


def plan_tuning(cfg: SelfKDExperimentConfig) -> list:
    """Every held-out run a choice is made on: each method's grid, and the cached teacher's T x ALPHA."""
    plan: list = []
    for student in cfg.students:
        for labels in _settings(cfg):
            for seed in cfg.tune_seeds:
                for method, (_, values) in SELF_GRIDS.items():
                    plan += [_self(cfg, method, student, seed, labels, v, tuning=True) for v in values]
                plan += [_student(cfg, student, seed, labels, T, a, tuning=True) for T in cfg.Ts for a in cfg.alphas]
    return plan


def _choose(tuning: list[dict]) -> dict[tuple, dict]:
    """Per (student, labels, arm): the setting with the best mean held-out accuracy (the first of equals)."""
    scores: dict[tuple, list[float]] = defaultdict(list)
    for m in tuning:
        arm = _arm_of(m)
        setting = (m["T"], m["alpha"]) if arm == "kd" else tuple(sorted(m["method_settings"].items()))
        scores[(m["student"], m["labels"], arm, setting)].append(m["val_acc"])
    best: dict[tuple, dict] = {}
    for (student, labels, arm, setting), vals in scores.items():
        val = statistics.fmean(vals)
        if (student, labels, arm) not in best or val > best[(student, labels, arm)]["val_acc"]:
            best[(student, labels, arm)] = {"setting": setting, "val_acc": val}
    return best


def _final_plan(cfg: SelfKDExperimentConfig, choice: dict) -> list:
    plan: list = []
    for student in cfg.students:
        for labels in _settings(cfg):
            for seed in cfg.seeds:
                plan.append(_student(cfg, student, seed, labels, 1.0, 0.0, tuning=False))
                for method in SELF_GRIDS:
                    chosen = dict(choice[(student, labels, method)]["setting"])
                    key = SELF_METHOD_KNOBS[method][0][0]          # the tuned setting is the method's first
                    plan.append(_self(cfg, method, student, seed, labels, chosen[key], tuning=False))
                T, alpha = choice[(student, labels, "kd")]["setting"]
                plan.append(_student(cfg, student, seed, labels, T, alpha, tuning=False))
    return plan


def _summary(final: list[dict], choice: dict, cfg: SelfKDExperimentConfig, rows: int) -> list[dict]:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for m in final:
        groups[(m["student"], m["labels"], _arm_of(m))].append(m)
    out = []
    for student in cfg.students:
        for labels in _settings(cfg):
            scratch = {m["seed"]: m for m in groups[(student, labels, "scratch")]}
            base_speed = statistics.fmean(m["seconds_per_epoch"] / max(m["train_rows"], 1) for m in scratch.values())
            for arm in ARMS:
                members = sorted(groups[(student, labels, arm)], key=lambda m: m["seed"])
                accs = [100 * m["test_acc"] for m in members]
                diffs = [100 * (m["test_acc"] - scratch[m["seed"]]["test_acc"]) for m in members]
                se2 = 2 * statistics.stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1 else None
                # cost per image seen against scratch's (the KD arm sees every row, the others the labelled ones)
                speed = statistics.fmean(m["seconds_per_epoch"] / max(m["train_rows"], 1) for m in members)
                picked = choice.get((student, labels, arm))
                out.append({
                    "student": student, "labels": rows if labels is None else labels, "arm": arm,
                    "name": "scratch" if arm == "scratch" else "KD (cached teacher)" if arm == "kd" else METHOD_NAMES[arm],
                    "setting": None if picked is None else picked["setting"],
                    "val_acc": None if picked is None else 100 * picked["val_acc"],
                    "epochs": members[0]["epochs"], "params": members[0]["params"],
                    "seeds": [m["seed"] for m in members], "test_acc": statistics.fmean(accs),
                    "test_acc_std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
                    "vs_scratch": None if arm == "scratch" else statistics.fmean(diffs),
                    "two_se": None if arm == "scratch" else se2,
                    "pays": None if arm == "scratch" or se2 is None else statistics.fmean(diffs) > se2,
                    "cost_vs_scratch": speed / base_speed,
                    "seconds_per_epoch": statistics.fmean(m["seconds_per_epoch"] for m in members),
                    "ece": 100 * statistics.fmean(m["ece"] for m in members),
                    "curve": _curve(members),
                })
    return out


def _curve(members: list[dict]) -> list[tuple[int, float]]:
    """(epoch, mean test accuracy %) at every epoch all seeds scored."""
    scored = [{h["epoch"]: h["test_acc"] for h in m["history"] if "test_acc" in h} for m in members]
    common = sorted(set.intersection(*(set(s) for s in scored))) if scored else []
    return [(e, 100 * statistics.fmean(s[e] for s in scored)) for e in common]


def _spell(setting) -> str:
    if setting is None:
        return "—"
    if isinstance(setting[0], tuple):
        return " ".join(f"{k}={v:g}" for k, v in setting)
    return f"T={setting[0]:g} ALPHA={setting[1]:g}"


def _render(cfg: SelfKDExperimentConfig, cache: LogitCache, rows: list[dict], n_rows: int) -> str:
    s = cfg.student
    lines = [
        "## Self-distillation: scratch vs PS-KD vs BYOT vs CS-KD vs the cached teacher", "",
        f"{teacher_line(cache)} {n_rows:,} training rows. Every arm: batch {s.batch_size}, AdamW + one-cycle "
        f"(lr {s.lr:g}), {'random crop ±2 + flip' if s.augment else 'no augmentation'}. Full labels: "
        f"{s.epochs} epochs. Few labels: {cfg.few_labels:,} labelled rows (class-balanced, from the run's seed); "
        f"scratch and the teacher-free arms train on them alone for {cfg.few_epochs} epochs, the KD arm on every row "
        f"(soft targets alone where there is no label) for {s.epochs}. Settings chosen on {cfg.holdout:,} held-out "
        f"training rows (seeds {' '.join(map(str, cfg.tune_seeds))}); test accuracy over seeds "
        f"{' '.join(map(str, cfg.seeds))}, reported once. Δ is against scratch of the same seed; it pays when the "
        "mean Δ exceeds twice its standard error. Cost: seconds per training image against scratch's, in the "
        "same experiment (runs JOBS at a time, so a noisy ratio; `make bench` measures it alone).", "",
        "| student | labels | arm | setting (held-out acc %) | epochs | test acc % (mean ± std) | Δ vs scratch (pp) "
        "| 2·SE | pays? | cost vs scratch | ECE % |",
        "|---|---:|---|---|---:|---:|---:|---:|---|---:|---:|",
    ]
    for r in rows:
        val = "" if r["val_acc"] is None else f" ({r['val_acc']:.2f})"
        delta = "—" if r["vs_scratch"] is None else f"{r['vs_scratch']:+.2f}"
        se = "—" if r["two_se"] is None else f"{r['two_se']:.2f}"
        pays = "—" if r["pays"] is None else "yes" if r["pays"] else "no"
        lines.append(f"| {r['student']} | {r['labels']:,} | {r['name']} | {_spell(r['setting'])}{val} | {r['epochs']} "
                     f"| {r['test_acc']:.2f} ± {r['test_acc_std']:.2f} | {delta} | {se} | {pays} "
                     f"| {r['cost_vs_scratch']:.2f}x | {r['ece']:.2f} |")
    return "\n".join(lines) + "\n"


def run_selfkd_experiment(cfg: SelfKDExperimentConfig, on_result=None) -> dict:
    """Tune on held-out rows, train every arm with every seed, write selfkd-experiment.{md,json}."""
    from pipeline.data.prepare import load_prepared

    cache = LogitCache(cfg.student.cache, combine=cfg.student.combine)
    rows = len(load_prepared(cfg.student.dataset).y_train)
    tuning = run_all(plan_tuning(cfg), cfg.reports_dir / "selfkd-tuning", cfg.jobs, cache, on_result,
                     train=train_any)
    choice = _choose(tuning)
    final = run_all(_final_plan(cfg, choice), cfg.reports_dir / "selfkd-final", cfg.jobs, cache, on_result,
                    train=train_any)
    summary = _summary(final, choice, cfg, rows)
    figure = selfkd_curves(summary, cfg.reports_dir, f"{REPORT}.png")
    with atomic_path(selfkd_report(cfg.reports_dir)) as tmp:
        tmp.write_text(_render(cfg, cache, summary, rows) + (f"\n![test accuracy per epoch]({figure})\n" if figure else ""))
    record = {"epochs": cfg.student.epochs, "few_epochs": cfg.few_epochs, "few_labels": cfg.few_labels,
              "holdout": cfg.holdout, "rows": rows, "cache": str(cache.path), "cache_fingerprint": cache.fingerprint,
              "teacher_test_acc": cache.teacher_accuracy("test"), "arms": summary}
    write_json(selfkd_report(cfg.reports_dir, ".json"), record)
    return record

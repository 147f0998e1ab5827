"""The few-labels experiment: what a cached teacher gives back when only N rows are labelled.

For every student and label count N (Hinton et al.'s "transfer set" regime, with the rest of
the training split as the unlabelled pool):

    scratch      hard labels on the N labelled rows only, which is all it sees, for
                 (a) the same epochs as the distilled arm and (b) the epochs it needs,
                 chosen on held-out rows among E, E * sqrt(r) and E * r (r = rows / N;
                 E * r is the distilled arm's number of optimiser steps)
    distilled    the same N hard labels (weight 1 - ALPHA) plus the teacher's soft
                 targets on every training row (weight ALPHA on labelled rows, 1 elsewhere),
                 T and ALPHA chosen on held-out rows; N = 0 is soft targets alone (ALPHA = 1)

Every arm trains with random crop + flip and AdamW + one-cycle. The held-out rows come out
of the training split (the labelled subset is drawn from the rest); the test split is
scored once, after the choice. Runs go through :func:`pipeline.experiments.sweep.run_planned`, so they
run JOBS at a time and a killed experiment resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections import defaultdict
from pathlib import Path

from pipeline.cache.reader import LogitCache
from pipeline.config import LabelsExperimentConfig, StudentConfig
from pipeline.experiments.base import best_per_group, mean_held_out, run_all, teacher_line
from pipeline.files import atomic_path, write_json
from pipeline.settings import threads_per_run

__all__ = ["run_labels_experiment", "labels_report", "plan_tuning", "scratch_epochs", "label_count"]

REPORT = "labels-experiment"


def labels_report(reports_dir: Path, suffix: str = ".md") -> Path:
    return Path(reports_dir) / f"{REPORT}{suffix}"


def label_count(n: int | None, rows: int) -> int | None:
    """A label count as a run takes it: None (every row labelled) for 'all' or N >= the training rows."""
    return None if n is None or n >= rows else n


def scratch_epochs(epochs: int, n: int | None, rows: int) -> list[int]:
    """The epochs a scratch run on N labelled rows is tried at: E (the distilled arm's), E * r (as many
    optimiser steps as the distilled arm) and their geometric mean, r = rows / N."""
    if n is None:
        return [epochs]
    ratio = rows / n
    return sorted({epochs, round(epochs * math.sqrt(ratio)), round(epochs * ratio)})


def _run(cfg: LabelsExperimentConfig, student: str, seed: int, labels: int | None, *, epochs: int,
         T: float = 1.0, alpha: float = 0.0, tuning: bool = False) -> StudentConfig:
    run = dataclasses.replace(cfg.student, student=student, seed=seed, T=float(T), alpha=float(alpha),
                              labels=labels, epochs=epochs, augment=True, replay=0,
                              holdout=cfg.holdout if tuning else 0, threads=threads_per_run(cfg.threads, cfg.jobs))
    return dataclasses.replace(run, out_dir=(cfg.tuning_dir if tuning else cfg.runs_dir) / run.run_name)


def _kd_grid(cfg: LabelsExperimentConfig, labels: int | None) -> list[tuple[float, float]]:
    """(T, ALPHA) pairs the distilled arm chooses from; with no labels ALPHA is 1 (soft targets only)."""
    alphas = (1.0,) if labels == 0 else cfg.alphas
    return [(T, a) for T in cfg.Ts for a in alphas]


def plan_tuning(cfg: LabelsExperimentConfig, rows: int) -> list[StudentConfig]:
    """Every held-out tuning run: the distilled grid and the scratch epochs, per student and label count."""
    epochs, plan = cfg.student.epochs, []
    for student in cfg.students:
        for seed in cfg.tune_seeds:
            for n in cfg.label_counts:
                labels = label_count(n, rows - cfg.holdout)
                if labels != 0:
                    plan += [_run(cfg, student, seed, labels, epochs=e, tuning=True)
                             for e in scratch_epochs(epochs, labels, rows)]
                plan += [_run(cfg, student, seed, labels, epochs=epochs, T=T, alpha=a, tuning=True)
                         for T, a in _kd_grid(cfg, labels)]
    return plan


_SCORED = ("student", "labels", "arm", "epochs", "T", "alpha")     # what a tuning run's score is kept by


def _scores(tuning: list[dict]) -> dict[tuple, float]:
    """Mean held-out accuracy over tuning seeds per (student, labels, arm, epochs, T, ALPHA)."""
    return mean_held_out([{**m, "arm": "scratch" if m["alpha"] == 0 else "distilled"} for m in tuning], _SCORED)


def _choose(scores: dict[tuple, float]) -> dict[tuple, dict]:
    """Per (student, labels, arm): the epochs, T and ALPHA with the best mean held-out accuracy."""
    return best_per_group(scores, _SCORED, ("student", "labels", "arm"))


def _final_plan(cfg: LabelsExperimentConfig, choice: dict, rows: int) -> list[StudentConfig]:
    plan = []
    for student in cfg.students:
        for n in cfg.label_counts:
            tuned = label_count(n, rows - cfg.holdout)     # as the tuning runs named it
            labels = label_count(n, rows)
            for seed in cfg.seeds:
                if labels != 0:
                    long = choice[(student, tuned, "scratch")]["epochs"]
                    plan += [_run(cfg, student, seed, labels, epochs=e)
                             for e in dict.fromkeys((cfg.student.epochs, long))]
                best = choice[(student, tuned, "distilled")]
                plan.append(_run(cfg, student, seed, labels, epochs=cfg.student.epochs, T=best["T"],
                                 alpha=best["alpha"]))
    return plan


def _summary(final: list[dict], scores: dict, choice: dict, cfg: LabelsExperimentConfig, rows: int) -> list[dict]:
    """One row per (student, labels, arm): scratch at the distilled arm's epochs, scratch at the epochs
    chosen for it (the same runs when E won), distilled; each with its gap to full-label scratch."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for m in final:
        groups[(m["student"], m["labels"], m["alpha"] == 0, m["epochs"])].append(m)
    epochs, out = cfg.student.epochs, []
    for student in cfg.students:
        for n in cfg.label_counts:
            tuned, labels = label_count(n, rows - cfg.holdout), label_count(n, rows)
            arms = [("distilled", False, epochs)]
            if labels != 0:
                long = choice[(student, tuned, "scratch")]["epochs"]
                arms = [("scratch", True, epochs), ("scratch, tuned epochs", True, long)] + arms
            for arm, scratch, run_epochs in arms:
                members = groups[(student, labels, scratch, run_epochs)]
                first = members[0]
                accs = [100 * m["test_acc"] for m in members]
                val = scores.get((student, tuned, "scratch" if scratch else "distilled", run_epochs,
                                  first["T"], first["alpha"]))
                out.append({
                    "student": student, "labels": rows if labels is None else labels, "arm": arm,
                    "epochs": run_epochs, "params": first["params"], "T": first["T"], "alpha": first["alpha"],
                    "seeds": sorted(m["seed"] for m in members), "test_acc": statistics.fmean(accs),
                    "test_acc_std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
                    "val_acc": None if val is None else 100 * val,
                    "train_minutes": statistics.fmean(m["train_seconds"] for m in members) / 60,
                })
    full = {r["student"]: r["test_acc"] for r in out if r["arm"] == "scratch" and r["labels"] == rows}
    same = {(r["student"], r["labels"]): r["test_acc"] for r in out if r["arm"] == "scratch"}
    tuned_scratch = {(r["student"], r["labels"]): r["test_acc"] for r in out if r["arm"] == "scratch, tuned epochs"}
    for r in out:
        key = (r["student"], r["labels"])
        r["vs_full_scratch"] = r["test_acc"] - full[r["student"]] if r["student"] in full else None
        r["vs_scratch"] = None if key not in same or r["arm"] == "scratch" else r["test_acc"] - same[key]
        r["vs_tuned_scratch"] = (r["test_acc"] - tuned_scratch[key] if key in tuned_scratch and r["arm"] == "distilled"
                                 else None)
    return out


def _signed(value: float | None) -> str:
    return "—" if value is None else f"{value:+.2f}"


def _render(cfg: LabelsExperimentConfig, cache: LogitCache, rows: list[dict], n_rows: int, figure: str | None) -> str:
    lines = [
        "## Few labels: scratch on N labels vs distilled on N labels plus the teacher's soft targets", "",
        f"{teacher_line(cache)} {n_rows:,} training rows; N of them keep their hard label (class-balanced, "
        f"drawn from the run's seed), the rest are unlabelled. Every arm: batch {cfg.student.batch_size}, AdamW + "
        f"one-cycle (lr {cfg.student.lr:g}), random crop ±2 + flip. Scratch sees only its N rows; distilled sees "
        f"every row. T, ALPHA and scratch's epochs are chosen on {cfg.holdout:,} held-out training rows "
        f"(seeds {' '.join(map(str, cfg.tune_seeds))}); test accuracy over seeds {' '.join(map(str, cfg.seeds))}, "
        "reported once. The held-out rows keep their labels for the choice, so the choice itself uses more labels "
        "than N: a user with N labels in all would hold some of them out.", "",
        "| student | labels | arm | epochs | T | ALPHA | held-out acc % | test acc % (mean ± std) "
        "| Δ vs scratch, same epochs (pp) | Δ vs scratch, tuned epochs (pp) | Δ vs full-label scratch (pp) | min/run |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        recipe = f"{r['T']:g} | {r['alpha']:g}" if r["arm"] == "distilled" else "— | 0"
        val = "—" if r["val_acc"] is None else f"{r['val_acc']:.2f}"
        lines.append(f"| {r['student']} | {r['labels']:,} | {r['arm']} | {r['epochs']} | {recipe} | {val} | "
                     f"{r['test_acc']:.2f} ± {r['test_acc_std']:.2f} | {_signed(r['vs_scratch'])} | "
                     f"{_signed(r['vs_tuned_scratch'])} | {_signed(r['vs_full_scratch'])} | {r['train_minutes']:.1f} |")
    if figure:
        lines += ["", f"![test accuracy against labels]({figure})"]
    return "\n".join(lines) + "\n"


def run_labels_experiment(cfg: LabelsExperimentConfig, on_result=None) -> dict:
    """Tune on held-out rows, train every arm with every seed, write labels-experiment.{md,json,png}."""
    from pipeline.data.prepare import load_prepared
    from pipeline.results.plots import accuracy_vs_labels

    cache = LogitCache(cfg.student.cache, combine=cfg.student.combine)
    rows = len(load_prepared(cfg.student.dataset).y_train)
    tuning = run_all(plan_tuning(cfg, rows), cfg.reports_dir / "labels-tuning", cfg.jobs, cache, on_result)
    scores = _scores(tuning)
    choice = _choose(scores)
    final = run_all(_final_plan(cfg, choice, rows), cfg.reports_dir / "labels-final", cfg.jobs, cache, on_result)
    summary = _summary(final, scores, choice, cfg, rows)
    figure = accuracy_vs_labels(summary, 100 * cache.teacher_accuracy("test"), cfg.reports_dir,
                                f"{REPORT}.png")
    with atomic_path(labels_report(cfg.reports_dir)) as tmp:
        tmp.write_text(_render(cfg, cache, summary, rows, figure))
    record = {"epochs": cfg.student.epochs, "holdout": cfg.holdout, "rows": rows, "cache": str(cache.path),
              "cache_fingerprint": cache.fingerprint, "teacher_test_acc": cache.teacher_accuracy("test"),
              "chosen": [{"student": s, "labels": n, "arm": a, **v} for (s, n, a), v in choice.items()],
              "label_counts": [n for n in cfg.label_counts],
              "arms": summary}
    write_json(labels_report(cfg.reports_dir, ".json"), record)
    return record

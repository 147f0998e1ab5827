"""The cached-views experiment: does distillation beat scratch once input and target match?

Three arms per student, on the same epochs, schedule and augmentation family:

    scratch   hard labels, random crop + flip
    clean     KD from one cached logit per image (the clean image's), random crop + flip,
              so the student's input and its soft target belong to different images
    replay    KD from K cached views, each replayed with the teacher's logits for it

The KD arms' T and ALPHA are chosen on held-out training rows (``val_acc``), never on
the test split; then every arm is trained on the whole training split with every seed
and its test accuracy is reported once. Runs go through :func:`pipeline.experiments.sweep.run_planned`,
so they run JOBS at a time and a killed experiment resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections import defaultdict
from pathlib import Path

from pipeline.cache.format import VIEW_SPLIT
from pipeline.cache.reader import LogitCache
from pipeline.config import StudentConfig, ViewsExperimentConfig
from pipeline.errors import UsageError
from pipeline.experiments.base import (
    best_per_group,
    mean_held_out,
    run_all,
    teacher_line,
)
from pipeline.files import atomic_path, write_json
from pipeline.settings import threads_per_run

__all__ = ["run_views_experiment", "experiment_report", "planned_run", "run_count"]


def experiment_report(reports_dir: Path, teacher_tag: str = "", suffix: str = ".md") -> Path:
    """views-experiment[-from<teacher tag>].md/.json: one write-up per teacher, so an ensemble's
    experiment does not overwrite a single teacher's."""
    return Path(reports_dir) / f"views-experiment{f'-from{teacher_tag}' if teacher_tag else ''}{suffix}"
KD_ARMS = ("clean", "replay")


def run_count(cfg: ViewsExperimentConfig) -> int:
    """Tuning runs (scratch + both KD arms over the grid) and final runs (three arms), all students."""
    per_seed = 1 + 2 * len(cfg.Ts) * len(cfg.alphas)
    return len(cfg.students) * (len(cfg.tune_seeds) * per_seed + 3 * len(cfg.seeds))


def planned_run(cfg: ViewsExperimentConfig, student: str, seed: int, *, T: float = 1.0, alpha: float = 0.0,
                replay: int = 0, tuning: bool = False) -> StudentConfig:
    """One run of the experiment: random crop+flip unless it replays cached views."""
    run = dataclasses.replace(cfg.student, student=student, seed=seed, T=float(T), alpha=float(alpha),
                              replay=replay, augment=not replay, holdout=cfg.holdout if tuning else 0,
                              threads=threads_per_run(cfg.threads, cfg.jobs))
    return dataclasses.replace(run, out_dir=(cfg.tuning_dir if tuning else cfg.runs_dir) / run.run_name)


def _tuning_plan(cfg: ViewsExperimentConfig, k: int) -> list[StudentConfig]:
    plan = []
    for student in cfg.students:
        for seed in cfg.tune_seeds:
            plan.append(planned_run(cfg, student, seed, tuning=True))
            for T in cfg.Ts:
                for alpha in cfg.alphas:
                    plan.append(planned_run(cfg, student, seed, T=T, alpha=alpha, tuning=True))
                    plan.append(planned_run(cfg, student, seed, T=T, alpha=alpha, replay=k, tuning=True))
    return plan


def _arm(metrics: dict) -> str:
    return "scratch" if metrics["alpha"] == 0 else "replay" if metrics.get("replay") else "clean"


def _choose(tuning: list[dict]) -> dict[tuple[str, str], dict]:
    """Per (student, KD arm): the (T, ALPHA) with the best mean held-out accuracy over tuning seeds."""
    fields = ("student", "arm", "T", "alpha")
    kd = [{**m, "arm": _arm(m)} for m in tuning if _arm(m) != "scratch"]
    return best_per_group(mean_held_out(kd, fields), fields, ("student", "arm"))


def _cache_costs(cache: LogitCache) -> dict:
    """Bytes each arm's cache needs (the views split only for replay) and the teacher-pass
    seconds, split by rows: every row is one teacher forward of one image of the same size."""
    stored = cache.storage_bytes()
    clean_rows = cache.rows("train") + cache.rows("test")
    all_rows = clean_rows + cache.rows(VIEW_SPLIT)
    seconds = cache.attrs.get("pass_seconds")
    clean_bytes = stored["train"] + stored["test"]
    return {
        "clean": {"cache_bytes": clean_bytes, "teacher_rows": clean_rows,
                  "teacher_seconds": None if seconds is None else seconds * clean_rows / all_rows},
        "replay": {"cache_bytes": clean_bytes + stored[VIEW_SPLIT], "teacher_rows": all_rows,
                   "teacher_seconds": seconds},
        "scratch": {"cache_bytes": 0, "teacher_rows": 0, "teacher_seconds": 0.0},
        "pass_seconds_measured": seconds is not None,
    }


def _summary(final: list[dict], choice: dict, costs: dict, teacher_acc: float) -> list[dict]:
    """One row per (student, arm); ``teacher_acc`` in % for the fraction of the teacher-scratch gap closed."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for m in final:
        groups[(m["student"], _arm(m))].append(m)
    rows = []
    for (student, arm), members in groups.items():
        accs = [100 * m["test_acc"] for m in members]
        rows.append({
            "student": student, "arm": arm, "params": members[0]["params"], "inputs": members[0]["inputs"],
            "T": members[0]["T"], "alpha": members[0]["alpha"], "seeds": sorted(m["seed"] for m in members),
            "test_acc": statistics.fmean(accs), "test_acc_std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
            "val_acc": None if arm == "scratch" else 100 * choice[(student, arm)]["val_acc"],
            "seconds_per_epoch": statistics.fmean(m["seconds_per_epoch"] for m in members),
            "train_minutes": statistics.fmean(m["train_seconds"] for m in members) / 60,
            "threads": members[0]["threads"], **costs[arm],
        })
    scratch = {r["student"]: r["test_acc"] for r in rows if r["arm"] == "scratch"}
    for r in rows:
        r["delta_pp"] = None if r["arm"] == "scratch" else r["test_acc"] - scratch[r["student"]]
        gap = teacher_acc - scratch[r["student"]]
        r["gap_closed"] = r["delta_pp"] / gap if r["delta_pp"] is not None and gap > 0 else None
    order = {"scratch": 0, "clean": 1, "replay": 2}
    return sorted(rows, key=lambda r: (r["params"], r["student"], order[r["arm"]]))


def _render(cfg: ViewsExperimentConfig, k: int, cache: LogitCache, tuning: list[dict], choice: dict,
            rows: list[dict], costs: dict) -> str:
    epochs = cfg.student.epochs
    views = f"the {k} cached views" + (f", each a mixup pair (Beta {cache.mixup:g})" if cache.mixup else "")
    lines = [
        f"## Cached views{f' from {cfg.student.teacher_tag[1:]}' if cfg.student.teacher_tag else ''}: "
        "scratch vs clean-target KD vs replayed-view KD", "",
        f"{teacher_line(cache)} Every arm: {epochs} epochs, batch "
        f"{cfg.student.batch_size}, AdamW + one-cycle (lr {cfg.student.lr:g}), crop ±2 + flip "
        f"(random for scratch and clean, {views} for replay). T and ALPHA chosen on "
        f"{cfg.holdout} held-out training rows (seeds {' '.join(map(str, cfg.tune_seeds))}); test accuracy "
        f"over seeds {' '.join(map(str, cfg.seeds))}, reported once.", "",
        "| student | params | arm | inputs | T | ALPHA | held-out acc % | test acc % (mean ± std) "
        "| Δ vs scratch (pp) | gap closed | s/epoch | min/run | teacher pass s | cache MB |",
        "|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        scratch = r["arm"] == "scratch"
        tuned = "— | 0 | —" if scratch else f"{r['T']:g} | {r['alpha']:g} | {r['val_acc']:.2f}"
        delta = "—" if r["delta_pp"] is None else f"{r['delta_pp']:+.2f}"
        teacher_s = "—" if r["teacher_seconds"] is None else f"{r['teacher_seconds']:.0f}"
        gap = "—" if r["gap_closed"] is None else f"{100 * r['gap_closed']:+.0f}%"
        lines.append(f"| {r['student']} | {r['params']:,} | {r['arm']} | {r['inputs']} | {tuned} | "
                     f"{r['test_acc']:.2f} ± {r['test_acc_std']:.2f} | {delta} | {gap} | {r['seconds_per_epoch']:.1f} | "
                     f"{r['train_minutes']:.1f} | {teacher_s} | {r['cache_bytes'] / 1e6:.1f} |")
    threads = sorted({r["threads"] for r in rows})
    lines += ["", f"Runs used {'/'.join(map(str, threads))} torch thread(s) each, {cfg.jobs} at a time. "
              "Teacher-pass seconds: the measured pass split by rows (one forward per row)"
              + ("" if costs["pass_seconds_measured"] else "; not recorded for this cache (resumed pass)") + ".",
              "", "Held-out accuracy % of the tuning grid (the row that was chosen is in bold):", "",
              "| student | arm | " + " | ".join(f"T={T:g} A={a:g}" for T in cfg.Ts for a in cfg.alphas) + " |",
              "|---|---|" + "---:|" * (len(cfg.Ts) * len(cfg.alphas))]
    val: dict[tuple, list[float]] = defaultdict(list)
    for m in tuning:
        val[(m["student"], _arm(m), m["T"], m["alpha"])].append(100 * m["val_acc"])
    for student in cfg.students:
        scratch_val = [v for (s, arm, _, _), vs in val.items() if s == student and arm == "scratch" for v in vs]
        for arm in KD_ARMS:
            chosen = choice[(student, arm)]
            cells = []
            for T in cfg.Ts:
                for a in cfg.alphas:
                    cell = f"{statistics.fmean(val[(student, arm, float(T), float(a))]):.2f}"
                    cells.append(f"**{cell}**" if (chosen["T"], chosen["alpha"]) == (T, a) else cell)
            lines.append(f"| {student} | {arm} | " + " | ".join(cells) + " |")
        lines.append(f"| {student} | scratch | {statistics.fmean(scratch_val):.2f} (no T/ALPHA) |"
                     + " |" * (len(cfg.Ts) * len(cfg.alphas) - 1))
    return "\n".join(lines) + "\n"


def run_views_experiment(cfg: ViewsExperimentConfig, on_result=None) -> dict:
    """Tune on held-out rows, train every arm with every seed, write views-experiment[-from<tag>].{md,json}."""
    cache = LogitCache(cfg.student.cache, combine=cfg.student.combine)
    if not cache.views:
        raise UsageError(f"cache {cfg.student.cache} holds no augmented views (VIEWS=K builds a cache with K views "
                         f"per image)", fix="experiment-views", fix_settings={"VIEWS": 8})
    k = cfg.replay or cache.views
    cache.view_params(k)                     # K larger than the views cached: one line, before any run
    tuning = run_all(_tuning_plan(cfg, k), cfg.reports_dir / "views-tuning", cfg.jobs, cache, on_result)
    choice = _choose(tuning)
    final_plan = []
    for student in cfg.students:
        for seed in cfg.seeds:
            final_plan.append(planned_run(cfg, student, seed))
            for arm, replay in (("clean", 0), ("replay", k)):
                best = choice[(student, arm)]
                final_plan.append(planned_run(cfg, student, seed, T=best["T"], alpha=best["alpha"], replay=replay))
    final = run_all(final_plan, cfg.reports_dir / "views-final", cfg.jobs, cache, on_result)
    costs = _cache_costs(cache)
    rows = _summary(final, choice, costs, 100 * cache.teacher_accuracy("test"))
    text = _render(cfg, k, cache, tuning, choice, rows, costs)
    record = {"views": k, "holdout": cfg.holdout, "epochs": cfg.student.epochs, "cache": str(cache.path),
              "cache_fingerprint": cache.fingerprint, "teacher_test_acc": cache.teacher_accuracy("test"),
              "teacher": cache.attrs.get("teacher"), "teacher_tag": cfg.student.teacher_tag,
              "member_test_acc": [float(a) for a in cache.attrs.get("member_test_acc", [])],
              "mixup": cache.mixup, "combine": cfg.student.combine,
              "chosen": [{"student": s, "arm": a, **v} for (s, a), v in sorted(choice.items())], "arms": rows}
    with atomic_path(experiment_report(cfg.reports_dir, cfg.student.teacher_tag)) as tmp:
        tmp.write_text(text)
    write_json(experiment_report(cfg.reports_dir, cfg.student.teacher_tag, ".json"), record)
    return record

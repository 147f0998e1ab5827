"""The patient experiment: accuracy against schedule length for scratch, clean-target KD and function matching.

Beyer et al. (2022, "Knowledge distillation: a good teacher is patient and consistent") find
that a student matching its teacher's function needs two things. It must see exactly the
view the teacher scored, mixup included, and it must train long: short runs look like
failures. A cache makes the long runs affordable, because the teacher's forward is paid
once, not on every batch of every epoch. For every student, seed and length L (epochs,
one-cycle schedule stretched to L, so every arm and length has the same schedule shape):

    scratch    hard labels, random crop + flip
    clean      KD from the clean image's cached logits, random crop + flip; T and ALPHA
               chosen on held-out rows at the shortest length, then kept for every length
    matching   function matching: KL only (ALPHA = 1) on the cached mixup view bank,
               every view replayed with the teacher's logits for exactly that blend

The write-up gives test accuracy (mean ± std over seeds) against L with the teacher drawn
in, the CPU-hours each arm cost, and an estimate of what online distillation would have
cost. That estimate is the same student work plus one teacher forward per image seen, at
the per-image teacher time recorded by the cache's own teacher pass. Runs go through
:func:`pipeline.experiments.sweep.run_planned` and resume after a kill: finished runs are kept, and a
run killed part-way continues from its last saved epoch (``pipeline.training.resume``).

With BANKS (bank sizes K), the matching arm is also trained at the longest length on the
first K cached views only, for every K, and each such run's fit on its bank is set against
its fit on the cache's remaining views, which it never saw (``pipeline.student.bank_fit``): Beyer
et al. warn that a small precomputed bank overfits, and this gap is that overfitting. The
cache must hold more views than the largest K, so that every bank leaves fresh views.
"""

from __future__ import annotations

import dataclasses
import json
from collections import defaultdict
from pathlib import Path

from pipeline.cache.format import VIEW_SPLIT
from pipeline.cache.reader import LogitCache
from pipeline.config import PatientExperimentConfig, StudentConfig
from pipeline.errors import UsageError
from pipeline.experiments.base import best_per_group, mean_held_out, run_all, teacher_line
from pipeline.files import atomic_path, write_json
from pipeline.results.records import mean_std
from pipeline.settings import threads_per_run

__all__ = ["run_patient_experiment", "patient_report", "plan_tuning", "plan_runs", "ARMS"]

REPORT = "patient-experiment"
ARMS = ("scratch", "clean", "matching")


def patient_report(reports_dir: Path, suffix: str = ".md") -> Path:
    return Path(reports_dir) / f"{REPORT}{suffix}"


def _run(cfg: PatientExperimentConfig, student: str, seed: int, epochs: int, arm: str, *, T: float = 1.0,
         alpha: float = 0.0, views: int = 0, tuning: bool = False) -> StudentConfig:
    replay = views if arm == "matching" else 0
    run = dataclasses.replace(cfg.student, student=student, seed=seed, epochs=epochs, T=float(T),
                              alpha=1.0 if arm == "matching" else float(alpha), replay=replay,
                              augment=not replay, holdout=cfg.holdout if tuning else 0,
                              threads=threads_per_run(cfg.threads, cfg.jobs))
    return dataclasses.replace(run, out_dir=(cfg.tuning_dir if tuning else cfg.runs_dir) / run.run_name)


def plan_tuning(cfg: PatientExperimentConfig) -> list[StudentConfig]:
    """The clean arm's T x ALPHA grid on held-out rows, at the shortest length."""
    shortest = min(cfg.lengths)
    return [_run(cfg, student, seed, shortest, "clean", T=T, alpha=a, tuning=True)
            for student in cfg.students for seed in cfg.tune_seeds for T in cfg.Ts for a in cfg.alphas]


def _choose(tuning: list[dict]) -> dict[str, dict]:
    """Per student: the clean arm's T and ALPHA with the best mean held-out accuracy."""
    fields = ("student", "T", "alpha")
    return best_per_group(mean_held_out(tuning, fields), fields, ("student",))


def _matching_views(cfg: PatientExperimentConfig, cache: LogitCache) -> int:
    """Views the matching arm replays at every length: REPLAY, else the largest bank, else every cached view."""
    return cfg.replay or (max(cfg.banks) if cfg.banks else cache.views)


def plan_runs(cfg: PatientExperimentConfig, choice: dict[str, dict], views: int) -> list[StudentConfig]:
    """Every final run, shortest lengths first, so a stopped experiment has whole short curves; then the
    matching arm at the longest length on each other bank size."""
    runs = [_run(cfg, student, seed, length, arm, T=cfg.matching_T if arm == "matching" else choice[student]["T"],
                 alpha=0.0 if arm == "scratch" else choice[student]["alpha"], views=views)
            for length in sorted(cfg.lengths) for student in cfg.students for seed in cfg.seeds for arm in ARMS]
    return runs + [_run(cfg, student, seed, max(cfg.lengths), "matching", T=cfg.matching_T, views=k)
                   for k in sorted(cfg.banks) if k != views for student in cfg.students for seed in cfg.seeds]


def _arm(m: dict) -> str:
    return "scratch" if m["alpha"] == 0 else "matching" if m.get("replay") else "clean"


def _teacher_seconds_per_image(cache: LogitCache) -> float | None:
    """The recorded teacher pass's seconds per image scored (every row is one forward of one image)."""
    seconds = cache.attrs.get("pass_seconds")
    if seconds is None and cache.attrs.get("published_record"):      # a published cache keeps it in its record
        seconds = json.loads(cache.attrs["published_record"]).get("pass_seconds")
    rows = cache.rows("train") + cache.rows("test") + (cache.rows(VIEW_SPLIT) if cache.views else 0)
    return None if seconds is None or not rows else seconds / rows


def _bank_summary(final: list[dict], banks: tuple[int, ...], longest: int) -> list[dict]:
    """Per student and bank size K: test accuracy and the fit on bank and on fresh views, mean ± std over seeds."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for m in final:
        if _arm(m) == "matching" and m["epochs"] == longest and m["replay"] in banks and m.get("bank_fit"):
            groups[(m["params"], m["student"], m["replay"])].append(m)
    rows = []
    for (_, student, k), members in sorted(groups.items()):
        fits = [m["bank_fit"] for m in members]
        row = {"student": student, "views": k, "fresh_views": fits[0]["fresh_views"],
               "seeds": sorted(m["seed"] for m in members),
               "test_acc": mean_std([100 * m["test_acc"] for m in members])}
        for name in ("agreement", "accuracy", "kl"):
            scale = 1 if name == "kl" else 100
            row[f"bank_{name}"] = mean_std([scale * f["bank"][name] for f in fits])
            row[f"fresh_{name}"] = mean_std([scale * f["fresh"][name] for f in fits])
            row[f"{name}_gap"] = mean_std([scale * (f["bank"][name] - f["fresh"][name]) for f in fits])
        rows.append(row)
    return rows


def _run_record(m: dict) -> dict:
    """One final run in a few numbers: enough to pool its seed with another session's runs of the same recipe."""
    return {"student": m["student"], "arm": _arm(m), "epochs": m["epochs"], "seed": m["seed"], "T": m["T"],
            "alpha": m["alpha"], "replay": m["replay"], "test_acc": m["test_acc"], "train_seconds": m["train_seconds"],
            "threads": m["threads"], "cache_fingerprint": m["cache_fingerprint"], "bank_fit": m.get("bank_fit")}


def _summary(final: list[dict], per_image: float | None) -> list[dict]:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for m in final:
        groups[(m["student"], _arm(m), m["epochs"])].append(m)
    rows = []
    for (student, arm, epochs), members in groups.items():
        acc, acc_std = mean_std([100 * m["test_acc"] for m in members])
        cpu_hours = sum(m["train_seconds"] * m["threads"] for m in members) / 3600
        images = sum(m["epochs"] * m["train_rows"] for m in members)
        rows.append({
            "student": student, "arm": arm, "epochs": epochs, "params": members[0]["params"],
            "T": members[0]["T"], "alpha": members[0]["alpha"], "seeds": sorted(m["seed"] for m in members),
            "test_acc": acc, "test_acc_std": acc_std,
            "cpu_hours": cpu_hours,
            "online_cpu_hours": (None if per_image is None or arm == "scratch"
                                 else cpu_hours + images * per_image / 3600),
        })
    scratch = {(r["student"], r["epochs"]): r["test_acc"] for r in rows if r["arm"] == "scratch"}
    for r in rows:
        base = scratch.get((r["student"], r["epochs"]))
        r["vs_scratch"] = None if base is None or r["arm"] == "scratch" else r["test_acc"] - base
    return sorted(rows, key=lambda r: (r["params"], r["student"], r["epochs"], ARMS.index(r["arm"])))


def _render_banks(banks: list[dict], longest: int, views: int) -> list[str]:
    if not banks:
        return []
    pm = lambda s, digits=2: f"{s[0]:.{digits}f} ± {s[1]:.{digits}f}"      # noqa: E731
    lines = ["", f"### Bank size against overfitting (function matching, {longest} epochs)", "",
             f"A run on a bank of K views saw only the first K of the cache's {views} views of each image. Each "
             "training row is scored once on one of its bank views and once on one of the views past K, which the "
             "run never saw; both were scored by the same teacher. Agreement: the student's top-1 equals the "
             "teacher's. KL(teacher ‖ student) at T=1, nats per view. Gap: bank minus fresh.", "",
             "| student | K | seeds | test acc % | agreement on bank % | on fresh % | gap (pp) | KL bank | KL fresh "
             "| KL gap |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in banks:
        lines.append(f"| {r['student']} | {r['views']} | {len(r['seeds'])} | {pm(r['test_acc'])} "
                     f"| {pm(r['bank_agreement'])} | {pm(r['fresh_agreement'])} | {pm(r['agreement_gap'])} "
                     f"| {pm(r['bank_kl'], 3)} | {pm(r['fresh_kl'], 3)} | {pm(r['kl_gap'], 3)} |")
    return lines


def _render(cfg: PatientExperimentConfig, cache: LogitCache, choice: dict, rows: list[dict], views: int,
            per_image: float | None, figure: str | None, banks: list[dict]) -> str:
    chosen = "; ".join(f"{s}: T={c['T']:g}, ALPHA={c['alpha']:g} (held-out {100 * c['val_acc']:.2f}%)"
                       for s, c in choice.items())
    lines = [
        "## Patient distillation: accuracy against schedule length", "",
        f"{teacher_line(cache)} Every arm: batch {cfg.student.batch_size}, AdamW + one-cycle (lr "
        f"{cfg.student.lr:g}) stretched to the run's length. scratch and clean: random crop ±2 + flip; matching: "
        f"KL only at T={cfg.matching_T:g} on the {views} cached mixup views per image (Beta {cache.mixup:g}). "
        f"Clean-target T and ALPHA chosen on {cfg.holdout:,} held-out training rows at {min(cfg.lengths)} epochs "
        f"({chosen}). Test accuracy over seeds {' '.join(map(str, cfg.seeds))}.", "",
        "| student | epochs | arm | T | ALPHA | test acc % (mean ± std) | Δ vs scratch (pp) | CPU-hours "
        "| online KD CPU-hours (est.) |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        recipe = "— | 0" if r["arm"] == "scratch" else f"{r['T']:g} | {r['alpha']:g}"
        delta = "—" if r["vs_scratch"] is None else f"{r['vs_scratch']:+.2f}"
        online = "—" if r["online_cpu_hours"] is None else f"{r['online_cpu_hours']:.3f}"
        lines.append(f"| {r['student']} | {r['epochs']} | {r['arm']} | {recipe} | {r['test_acc']:.2f} ± "
                     f"{r['test_acc_std']:.2f} | {delta} | {r['cpu_hours']:.3f} | {online} |")
    where = "the published cache's teacher pass" if cache.attrs.get("published") else "this cache's teacher pass"
    lines += ["", "CPU-hours: training seconds × torch threads, summed over seeds. Online KD: the same plus one "
              "teacher forward per training image seen, at " + (f"{per_image * 1e3:.3f} ms per image ({where})"
                                                                  if per_image else "an unrecorded pass time")
              + "; the cache paid that forward once per image and view instead."]
    if figure:
        lines += ["", f"![accuracy against epochs]({figure})"]
    lines += _render_banks(banks, max(cfg.lengths), cache.views)
    return "\n".join(lines) + "\n"


def run_patient_experiment(cfg: PatientExperimentConfig, on_result=None) -> dict:
    """Tune the clean arm, train every arm at every length and seed, write patient-experiment.{md,json,png}."""
    from pipeline.results.plots import accuracy_vs_epochs

    cache = LogitCache(cfg.student.cache, combine=cfg.student.combine)
    if not cache.views or not cache.mixup:
        raise UsageError(f"cache {cfg.student.cache} holds no mixup view bank, which function matching replays; "
                         f"build one with VIEWS=8 MIXUP=1", fix="experiment-patient",
                         fix_settings={"VIEWS": 8, "MIXUP": 1})
    views = _matching_views(cfg, cache)
    cache.view_params(max((views, *cfg.banks)))    # more views than cached: one line, before any run
    if cfg.banks and cache.views <= max(cfg.banks):
        raise UsageError(f"cache {cfg.student.cache} holds {cache.views} views per image, so a bank of "
                         f"{max(cfg.banks)} leaves no fresh view to measure its fit on; build more views than the "
                         f"largest of BANKS, e.g. VIEWS={max(cfg.banks) + 4}", fix="experiment-patient",
                         fix_settings={"VIEWS": max(cfg.banks) + 4, "MIXUP": 1})
    tuning = run_all(plan_tuning(cfg), cfg.reports_dir / "patient-tuning", cfg.jobs, cache, on_result)
    choice = _choose(tuning)
    final = run_all(plan_runs(cfg, choice, views), cfg.reports_dir / "patient-final", cfg.jobs, cache, on_result)
    per_image = _teacher_seconds_per_image(cache)
    curves = [m for m in final if _arm(m) != "matching" or m["replay"] == views]   # one matching arm per length
    rows = _summary(curves, per_image)
    banks = _bank_summary(final, cfg.banks, max(cfg.lengths))
    figure = accuracy_vs_epochs(rows, 100 * cache.teacher_accuracy("test"), cfg.reports_dir, f"{REPORT}.png")
    with atomic_path(patient_report(cfg.reports_dir)) as tmp:
        tmp.write_text(_render(cfg, cache, choice, rows, views, per_image, figure, banks))
    record = {"lengths": list(cfg.lengths), "views": views, "holdout": cfg.holdout, "cache": str(cache.path),
              "cache_fingerprint": cache.fingerprint, "teacher_test_acc": cache.teacher_accuracy("test"),
              "teacher_seconds_per_image": per_image,
              "chosen": [{"student": s, **c} for s, c in choice.items()], "arms": rows, "banks": banks,
              "runs": [_run_record(m) for m in final]}
    write_json(patient_report(cfg.reports_dir, ".json"), record)
    return record

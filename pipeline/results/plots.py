"""The report's pictures, drawn from the summary rows of :func:`pipeline.results.report.summarize`.

Each function writes one PNG and returns its file name, or None when the runs hold
nothing to draw for it (a report of scratch runs has no temperature axis). matplotlib
runs headless (the Agg backend); every figure has error bars of ± one sample standard
deviation over seeds, the spread a reader needs to judge a difference.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import matplotlib

from pipeline.files import atomic_path

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)

__all__ = ["draw_all"]


def _students(rows: list[dict]) -> list[str]:
    return list(dict.fromkeys(r["student"] for r in rows))


def _save(fig, out_dir: Path, name: str) -> str:
    fig.tight_layout()
    with atomic_path(out_dir / name) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return name


def _best_distilled(rows: list[dict], student: str, epochs: int) -> dict | None:
    kd = [r for r in rows if r["student"] == student and r["epochs"] == epochs and r["alpha"] != 0]
    return max(kd, key=lambda r: r["acc"]) if kd else None


def _scratch(rows: list[dict], student: str, epochs: int, family: str | None = None) -> dict | None:
    return next((r for r in rows if r["student"] == student and r["epochs"] == epochs and r["alpha"] == 0
                 and family in (None, r.get("family"))), None)


def _pair(rows: list[dict], student: str, epochs: int) -> tuple[dict | None, dict | None]:
    """The best distilled arm and the scratch run with the same augmentation family (its fair baseline)."""
    best = _best_distilled(rows, student, epochs)
    return _scratch(rows, student, epochs, best.get("family") if best else None), best


def accuracy_vs_temperature(rows: list[dict], out_dir: Path) -> str | None:
    students = [s for s in _students(rows) if any(r["student"] == s and r["alpha"] != 0 for r in rows)]
    if not students:
        return None
    fig, axes = plt.subplots(1, len(students), figsize=(4.2 * len(students), 3.4), squeeze=False)
    for ax, student in zip(axes[0], students):
        mine = [r for r in rows if r["student"] == student]
        epochs = max(r["epochs"] for r in mine)
        by_alpha: dict[float, list[dict]] = defaultdict(list)
        for r in mine:
            if r["epochs"] == epochs and r["alpha"] != 0:
                by_alpha[r["alpha"]].append(r)
        for alpha, group in sorted(by_alpha.items()):
            group.sort(key=lambda r: r["T"])
            ax.errorbar([r["T"] for r in group], [r["acc"] for r in group], yerr=[r["acc_std"] for r in group],
                        marker="o", capsize=3, label=f"ALPHA={alpha:g}")
        scratch = _scratch(mine, student, epochs)
        if scratch:
            ax.axhline(scratch["acc"], color="k", ls="--", lw=1, label="scratch")
            ax.axhspan(scratch["acc"] - scratch["acc_std"], scratch["acc"] + scratch["acc_std"], color="k", alpha=0.08)
        ax.set_xscale("log", base=2)
        ax.set_title(f"{student}, {epochs} epochs")
        ax.set_xlabel("temperature T")
        ax.set_ylabel("test accuracy %")
        ax.legend(fontsize=8)
    return _save(fig, out_dir, "acc_vs_T.png")


def scratch_vs_distilled(rows: list[dict], out_dir: Path) -> str | None:
    pairs = []
    for student in _students(rows):
        epochs = max(r["epochs"] for r in rows if r["student"] == student)
        pairs.append((student, *_pair(rows, student, epochs)))
    if not any(s and d for _, s, d in pairs):
        return None
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(pairs), 3.6))
    width = 0.38
    for i, (student, scratch, best) in enumerate(pairs):
        for offset, row, colour, label in ((-width / 2, scratch, "#999999", "scratch"),
                                           (width / 2, best, "#1f77b4", "best distilled")):
            if row:
                ax.bar(i + offset, row["acc"], width, yerr=row["acc_std"], capsize=3, color=colour,
                       label=label if i == 0 else None)
                ax.text(i + offset, row["acc"], f"{row['acc']:.2f}", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(pairs)), [p[0] for p in pairs])
    lows = [r["acc"] - r["acc_std"] for _, s, d in pairs for r in (s, d) if r]
    ax.set_ylim(min(lows) - 2, max(r["acc"] for r in rows) + 1.5)
    ax.set_ylabel("test accuracy % (mean ± std)")
    ax.set_title("scratch vs best distilled arm, same epochs")
    ax.legend(fontsize=8)
    return _save(fig, out_dir, "scratch_vs_distilled.png")


def accuracy_vs_params(rows: list[dict], out_dir: Path) -> str | None:
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    for student in _students(rows):
        epochs = max(r["epochs"] for r in rows if r["student"] == student)
        scratch, best = _pair(rows, student, epochs)
        for row, marker, label in ((scratch, "s", "scratch"), (best, "o", "best distilled")):
            if row:
                ax.errorbar(row["params"], row["acc"], yerr=row["acc_std"], marker=marker, capsize=3,
                            color="#999999" if marker == "s" else "#1f77b4", label=label)
                ax.annotate(student, (row["params"], row["acc"]), fontsize=7, xytext=(4, 4),
                            textcoords="offset points")
    for teacher in sorted({r["teacher_acc"] for r in rows if r["teacher_acc"] is not None}):
        ax.axhline(teacher, color="#d62728", ls=":", label=f"teacher {teacher:.2f}%")
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    ax.legend(unique.values(), unique.keys(), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("student parameters")
    ax.set_ylabel("test accuracy %")
    ax.set_title("accuracy vs size")
    return _save(fig, out_dir, "acc_vs_params.png")


def agreement(rows: list[dict], out_dir: Path) -> str | None:
    rows = [r for r in rows if r["agreement"] is not None]   # PS-KD runs have no teacher to agree with
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    for r in rows:
        scratch = r["alpha"] == 0
        ax.scatter(r["agreement"], r["acc"], marker="s" if scratch else "o",
                   color="#999999" if scratch else "#1f77b4")
        label = "scratch" if scratch else f"T{r['T']:g} a{r['alpha']:g}"
        ax.annotate(f"{r['student']} {label}", (r["agreement"], r["acc"]), fontsize=6, xytext=(3, 3),
                    textcoords="offset points")
    ax.set_xlabel("agreement with the teacher's argmax on test %")
    ax.set_ylabel("test accuracy %")
    ax.set_title("student-teacher agreement (square: scratch)")
    return _save(fig, out_dir, "agreement.png")


def calibration(rows: list[dict], out_dir: Path) -> str | None:
    rated = [r for r in rows if r["ece"] is not None]
    if not rated:
        return None
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    left.bar(range(len(rated)), [100 * r["ece"] for r in rated],
             color=["#999999" if r["alpha"] == 0 else "#1f77b4" for r in rated])
    left.set_xticks(range(len(rated)), [f"{r['student']}\n{r['arm']}" for r in rated], rotation=60,
                    fontsize=6, ha="right")
    left.set_ylabel("ECE % (15 bins, mean over seeds)")
    left.set_title("calibration error per arm (grey: scratch)")
    right.plot([0, 1], [0, 1], color="k", ls=":", lw=1)
    student = _students(rated)[0]
    epochs = max(r["epochs"] for r in rated if r["student"] == student)
    for row, colour in zip(_pair(rated, student, epochs), ("#999999", "#1f77b4")):
        if row and row["reliability"]:
            bins = row["reliability"][0]
            used = [i for i, n in enumerate(bins["count"]) if n > 0]
            right.plot([bins["confidence"][i] for i in used], [bins["accuracy"][i] for i in used], marker="o",
                       color=colour, label=f"{row['arm']} (seed {row['seeds'][0]}), ECE {100 * bins['ece']:.2f}%")
    right.set_xlabel("confidence")
    right.set_ylabel("accuracy")
    right.set_title(f"reliability diagram, {student}")
    right.legend(fontsize=7)
    return _save(fig, out_dir, "calibration.png")


def learning_curves(rows: list[dict], out_dir: Path) -> str | None:
    """Test accuracy and train loss per epoch of each student's scratch and best distilled arm
    (mean over seeds), at each student's longest schedule: where a run was still learning."""
    curves = []
    for student in _students(rows):
        with_history = [r for r in rows if r["student"] == student and r["histories"]]
        if with_history:
            epochs = max(r["epochs"] for r in with_history)
            curves += [(student, r) for r in _pair(with_history, student, epochs) if r and r["histories"]]
    if not curves:
        return None
    fig, (acc_ax, loss_ax) = plt.subplots(1, 2, figsize=(10, 3.8))
    colours = {student: f"C{i}" for i, student in enumerate(dict.fromkeys(student for student, _ in curves))}
    for student, row in curves:
        n = min(len(h) for h in row["histories"])
        scored = [e for e in range(n) if all("test_acc" in h[e] for h in row["histories"])]   # long runs: some
        mean = lambda key, at: [sum(h[e][key] for h in row["histories"]) / len(row["histories"]) for e in at]  # noqa: E731
        style = dict(ls="--" if row["alpha"] == 0 else "-", marker="o" if n <= 50 else None, color=colours[student],
                     label=f"{student}: {row['arm']}")
        acc_ax.plot([e + 1 for e in scored], [100 * a for a in mean("test_acc", scored)], **style)
        loss_ax.plot(range(1, n + 1), mean("train_loss", range(n)), **style)
    for ax in (acc_ax, loss_ax):
        ax.xaxis.get_major_locator().set_params(integer=True)
    acc_ax.set_xlabel("epoch"), acc_ax.set_ylabel("test accuracy %"), acc_ax.set_title("test accuracy per epoch")
    loss_ax.set_xlabel("epoch"), loss_ax.set_ylabel("train loss (its own objective)")
    loss_ax.set_title("train loss per epoch (dashed: scratch)")
    acc_ax.legend(fontsize=6)
    return _save(fig, out_dir, "learning_curves.png")


_ARM_STYLES = (("o--", "tab:gray"), ("s:", "tab:blue"), ("^-", "tab:red"))   # baseline, its variant, the method


def _arm_curves(rows: list[dict], arms: dict[str, str], x: str, xlabel: str, teacher_acc: float, out_dir: Path,
                name: str, extra_lines=None) -> str | None:
    """One panel per student: test accuracy (mean ± std) against ``x`` (log axis) for each of ``arms``
    (arm -> legend label), the teacher's accuracy drawn in, and ``extra_lines(ax, student rows)`` for more."""
    students = _students(rows)
    if not students:
        return None
    fig, axes = plt.subplots(1, len(students), figsize=(4.6 * len(students), 3.6), squeeze=False)
    for ax, student in zip(axes[0], students):
        mine = [r for r in rows if r["student"] == student]
        for (arm, label), (marker, color) in zip(arms.items(), _ARM_STYLES):
            curve = sorted((r for r in mine if r["arm"] == arm and r[x] > 0), key=lambda r: r[x])
            if curve:
                ax.errorbar([r[x] for r in curve], [r["test_acc"] for r in curve],
                            yerr=[r["test_acc_std"] for r in curve], fmt=marker, color=color, capsize=3, label=label)
        if extra_lines is not None:
            extra_lines(ax, mine)
        ax.axhline(teacher_acc, color="tab:green", lw=0.8, label="teacher")
        ax.set_xscale("log")
        measured = sorted({r[x] for r in mine if r[x] > 0})
        ax.set_xticks(measured, [f"{v:,g}" for v in measured])   # the measured points, in plain numbers
        ax.minorticks_off()
        ax.set_xlabel(xlabel)
        ax.set_ylabel("test accuracy %")
        ax.set_title(student)
        ax.legend(fontsize=7, loc="best")
    return _save(fig, out_dir, name)


def accuracy_vs_labels(rows: list[dict], teacher_acc: float, out_dir: Path, name: str) -> str | None:
    """The few-labels experiment (``pipeline.experiments.labels`` rows): test accuracy against the hard labels
    used, scratch (same epochs, and tuned epochs) and distilled, with full-label scratch and the teacher drawn in."""
    def lines(ax, mine):
        no_labels = next((r for r in mine if r["labels"] == 0), None)
        full = next((r for r in mine if r["arm"] == "scratch" and r["labels"] == max(m["labels"] for m in mine)),
                    None)
        if no_labels:
            ax.axhline(no_labels["test_acc"], color="tab:red", lw=0.8, ls="-.", label="soft targets only (0 labels)")
        if full:
            ax.axhline(full["test_acc"], color="black", lw=0.8, ls="--", label="scratch, all labels")

    arms = {"scratch": "scratch", "scratch, tuned epochs": "scratch, tuned epochs", "distilled": "distilled"}
    return _arm_curves(rows, arms, "labels", "hard labels used", teacher_acc, out_dir, name, lines)


def accuracy_vs_epochs(rows: list[dict], teacher_acc: float, out_dir: Path, name: str) -> str | None:
    """The patient experiment (``pipeline.experiments.patient`` rows): test accuracy against schedule length per arm,
    with the teacher drawn in."""
    arms = {"scratch": "scratch", "clean": "clean-target KD", "matching": "function matching (mixup bank)"}
    return _arm_curves(rows, arms, "epochs", "epochs (one-cycle schedule stretched to the run)", teacher_acc,
                       out_dir, name)


def selfkd_curves(rows: list[dict], out_dir: Path, name: str) -> str | None:
    """The self-distillation experiment (``pipeline.experiments.selfkd`` rows, each with ``curve``: the mean
    test accuracy % per scored epoch over its seeds): one panel per student and label setting, one line per
    arm, its final mean ± std in the legend."""
    panels = list(dict.fromkeys((r["student"], r["labels"]) for r in rows if r.get("curve")))
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(4.4 * len(panels), 3.8), squeeze=False)
    for ax, (student, labels) in zip(axes[0], panels):
        for i, r in enumerate(r for r in rows if (r["student"], r["labels"]) == (student, labels) and r.get("curve")):
            epochs, accs = zip(*r["curve"])
            ax.plot(epochs, accs, ls="--" if r["arm"] == "scratch" else "-", color=f"C{i}",
                    label=f"{r['name']}: {r['test_acc']:.2f} ± {r['test_acc_std']:.2f}")
        ax.set_xlabel("epoch"), ax.set_ylabel("test accuracy % (mean over seeds)")
        ax.set_title(f"{student}, {labels:,} labels")
        ax.legend(fontsize=7, loc="lower right")
    return _save(fig, out_dir, name)


def draw_all(rows: list[dict], out_dir: Path) -> list[str]:
    """Every figure the rows support, written into out_dir; returns their file names."""
    out_dir.mkdir(parents=True, exist_ok=True)
    drawn = [draw(rows, out_dir) for draw in (scratch_vs_distilled, accuracy_vs_temperature, accuracy_vs_params,
                                              agreement, calibration, learning_curves)]
    return [name for name in drawn if name]

"""The results table: every finished run under data/runs/, grouped, scratch against distilled.

Runs that differ only in seed form one row (mean ± sample std over seeds). Each
distilled row is compared with the scratch row (ALPHA = 0) of the same student, epochs
and augmentation family (clean images, or crop + flip whether random or replayed from
cached views), so a gain is only ever claimed against the same schedule and inputs.
"""

from __future__ import annotations

import datetime as dt
import shutil
import statistics
from collections import defaultdict
from pathlib import Path

from pipeline.errors import UsageError
from pipeline.files import atomic_path, read_json
from pipeline.names import SELF_METHOD_LABEL, SELF_METHOD_RECORD
from pipeline.provenance import code_version, other_code
from pipeline.results.lm_report import is_lm_record, render_lm
from pipeline.results.records import check_record, mean_std

__all__ = ["mean_std", "collect_runs", "summarize", "render_markdown", "render_winners", "winners", "render_exports",
           "results_section", "write_report", "README_START", "README_END"]


# What every finished run's metrics.json holds, whatever made it (distillation, PS-KD): what reports group by.
RUN_RECORD = {"student": str, "epochs": int, "seed": int, "test_acc": float, "params": int,
              "seconds_per_epoch": float}


def collect_runs(runs_dir: Path) -> list[dict]:
    """metrics.json of every finished run (directories being written are skipped: they start with '.')."""
    runs = []
    for path in sorted(Path(runs_dir).glob("[!.]*/metrics.json")):
        metrics = read_json(path)
        if is_lm_record(metrics):      # language-model students: their own table (report_lm)
            continue
        check_record(path, metrics, RUN_RECORD, "a run")
        metrics["run"] = path.parent.name
        runs.append(metrics)
    return runs


_SELF_ARMS = {SELF_METHOD_RECORD[m]: label for m, label in SELF_METHOD_LABEL.items()}   # "ps-kd" -> "PS-KD"
_SELF_KNOBS = {"alpha_T": "ALPHA_T", "alpha": "α", "beta": "β", "lambda": "λ"}


def _arm(run: dict) -> str:
    if run.get("method") in _SELF_ARMS:     # self-distillation: the method and its own settings
        knobs = run.get("method_settings") or {"alpha_T": run["alpha_T"]}
        spelled = " ".join(f"{_SELF_KNOBS.get(k, k)}={v:g}" for k, v in knobs.items())
        inputs = "" if run.get("inputs", "clean") == "clean" else f", {run['inputs']}"
        return f"{_SELF_ARMS[run['method']]} {spelled}{inputs}{_labels(run)}"
    arm = "scratch" if run["alpha"] == 0 else f"KD T={run['T']:g} ALPHA={run['alpha']:g}"
    if run["alpha"] != 0 and run.get("teacher_tag"):            # a teacher other than the default one
        arm += f" from {run['teacher_tag'].lstrip('-')}"
    if run["alpha"] != 0 and run.get("combine", "logits") != "logits":
        combine = run["combine"]
        arm += " (mean of probs)" if combine == "probs" else f" (member {combine})"
    if run.get("mixup"):
        arm += ", mixup"
    inputs = run.get("inputs", "clean")
    arm = arm if inputs == "clean" else f"{arm}, {inputs}"
    return arm + _labels(run)


def _labels(run: dict) -> str:
    return "" if run.get("labels") is None else f", {run['labels']:,} labels"


def _family(run: dict) -> str:
    """Which scratch run is the fair baseline: augmented inputs (random or replayed views) or clean ones,
    on as many hard labels."""
    inputs = "clean" if run.get("inputs", "clean") == "clean" and not run.get("augment") else "crop+flip"
    return inputs + _labels(run)


def _is_scratch(arm: str) -> bool:
    return arm.split(",")[0] == "scratch"


def _mean_of(members: list[dict], key: str, scale: float = 1.0) -> float | None:
    values = [m[key] for m in members if m.get(key) is not None]
    return scale * statistics.fmean(values) if values else None


def summarize(runs: list[dict]) -> list[dict]:
    """One row per (student, epochs, arm), scratch first, with the difference to scratch in pp."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in runs:   # runs on another dataset (or a LIMIT subset) are compared among themselves only
        student = f"{r['student']} on {r['data']}" if r.get("data") else r["student"]
        groups[(student, r["epochs"], _family(r), _arm(r))].append(r)
    rows = []
    for (student, epochs, family, arm), members in groups.items():
        acc, acc_std = mean_std([100 * m["test_acc"] for m in members])
        rows.append({
            "student": student, "epochs": epochs, "family": family, "arm": arm, "params": members[0]["params"],
            "T": members[0]["T"], "alpha": members[0]["alpha"],
            "ece": _mean_of(members, "ece"),
            "reliability": [m["reliability"] for m in members if "reliability" in m],
            "histories": [m["history"] for m in members if m.get("history")],
            "seeds": sorted(m["seed"] for m in members), "acc": acc, "acc_std": acc_std,
            "agreement": _mean_of(members, "agreement_with_teacher", 100),
            "seconds_per_epoch": statistics.fmean(m["seconds_per_epoch"] for m in members),
            "teacher_acc": _mean_of(members[:1], "teacher_test_acc", 100),   # PS-KD runs have no teacher
        })
    scratch = {(r["student"], r["epochs"], r["family"]): r["acc"] for r in rows if _is_scratch(r["arm"])}
    for r in rows:
        base = scratch.get((r["student"], r["epochs"], r["family"]))
        r["delta"] = None if base is None or _is_scratch(r["arm"]) else r["acc"] - base
        r["gap_closed"] = _gap_closed(r["acc"], base, r["teacher_acc"]) if r["delta"] is not None else None
    rows.sort(key=lambda r: (r["params"], r["student"], r["epochs"], r["family"], not _is_scratch(r["arm"]), r["arm"]))
    return rows


def _gap_closed(student: float, scratch: float, teacher: float | None) -> float | None:
    """How much of the teacher-over-scratch gap distillation closed: (student - scratch) / (teacher - scratch).
    1 means the student reached the teacher; negative means it fell below scratch. None when the
    teacher is not above scratch (there is no gap to close)."""
    if teacher is None or teacher <= scratch:
        return None
    return (student - scratch) / (teacher - scratch)


def render_markdown(rows: list[dict]) -> str:
    if not rows:
        return "No finished student runs yet: run 'make student' or 'make demo'.\n"
    teachers = sorted({f"{r['teacher_acc']:.2f}%" for r in rows if r["teacher_acc"] is not None}) or ["none"]
    lines = [
        f"Teacher test accuracy: {', '.join(teachers)}",
        "",
        "| student | params | epochs | arm | seeds | test acc % (mean ± std) | Δ vs scratch (pp) | teacher % "
        "| gap closed | agreement with teacher % | ECE % | s/epoch |",
        "|---|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        delta = "—" if r["delta"] is None else f"{r['delta']:+.2f}"
        teacher = "—" if r["teacher_acc"] is None or _is_scratch(r["arm"]) else f"{r['teacher_acc']:.2f}"
        gap = "—" if r.get("gap_closed") is None else f"{100 * r['gap_closed']:+.0f}%"
        ece = "—" if r.get("ece") is None else f"{100 * r['ece']:.2f}"
        agreement = "—" if r["agreement"] is None else f"{r['agreement']:.1f}"
        lines.append(
            f"| {r['student']} | {r['params']:,} | {r['epochs']} | {r['arm']} | "
            f"{' '.join(map(str, r['seeds']))} | {r['acc']:.2f} ± {r['acc_std']:.2f} | {delta} | {teacher} | {gap} | "
            f"{agreement} | {ece} | {r['seconds_per_epoch']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def winners(rows: list[dict]) -> list[dict]:
    """Per (student, epochs, augmentation family): the arm with the best mean accuracy, its
    margin over scratch and over the runner-up, and whether that margin exceeds the
    seed-to-seed spread."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        groups[(r["student"], r["epochs"], r["family"])].append(r)
    out = []
    for (student, epochs, family), arms in groups.items():
        ranked = sorted(arms, key=lambda r: r["acc"], reverse=True)
        best = ranked[0]
        scratch = next((r for r in arms if _is_scratch(r["arm"])), None)
        over_scratch = None if scratch is None or best is scratch else best["acc"] - scratch["acc"]
        spread = max(best["acc_std"], scratch["acc_std"] if scratch else 0.0)
        out.append({"student": student, "epochs": epochs, "family": family, "arm": best["arm"], "acc": best["acc"],
                    "acc_std": best["acc_std"], "seeds": len(best["seeds"]), "over_scratch": over_scratch,
                    "over_runner_up": best["acc"] - ranked[1]["acc"] if len(ranked) > 1 else None,
                    "runner_up": ranked[1]["arm"] if len(ranked) > 1 else None,
                    "beyond_noise": over_scratch is not None and len(best["seeds"]) > 1 and over_scratch > spread})
    return out


def render_winners(rows: list[dict]) -> str:
    if not rows:
        return ""
    lines = ["| student | epochs | inputs | winning arm | test acc % | over scratch (pp) | over runner-up (pp) "
             "| beyond seed spread? |", "|---|---:|---|---|---:|---:|---:|---|"]
    for w in winners(rows):
        scratch = "— (scratch won)" if _is_scratch(w["arm"]) else (
            "no scratch run" if w["over_scratch"] is None else f"{w['over_scratch']:+.2f}")
        runner = "—" if w["runner_up"] is None else f"{w['over_runner_up']:+.2f} ({w['runner_up']})"
        noise = ("—" if w["over_scratch"] is None else "yes" if w["beyond_noise"]
                 else "n/a (1 seed)" if w["seeds"] < 2 else "no")
        lines.append(f"| {w['student']} | {w['epochs']} | {w['family']} | {w['arm']} | {w['acc']:.2f} ± {w['acc_std']:.2f} | "
                     f"{scratch} | {runner} | {noise} |")
    return "\n".join(lines) + "\n"


def _why_note(rows: list[dict]) -> str:
    """Where the gain is, in a sentence under the winners: with every label a student can only gain what its
    teacher knows beyond the labels, which for a teacher a few points above the students is little; with few
    labels, the cached targets are what the student learns from."""
    scratch_full = [r["acc"] for r in rows if _is_scratch(r["arm"]) and "labels" not in r["family"]]
    teacher = max((r["teacher_acc"] for r in rows if r["teacher_acc"] is not None), default=None)
    if not scratch_full or teacher is None:
        return ""
    note = (f"\nWith every label, the teacher ({teacher:.2f}%) is {teacher - max(scratch_full):.2f} pp above the best "
            f"scratch student, so its soft targets hold little the labels do not already teach (the committed cache's "
            f"teacher was trained on a CPU; a stronger one leaves more to distil).")
    few = [w for w in winners(rows) if "labels" in w["family"] and w["over_scratch"] is not None]
    for w in few:
        gain = w["over_scratch"] if not _is_scratch(w["arm"]) else 0.0
        note += (f" With hard labels on few rows ({w['family']}), the cache is what {w['student']} learns from: "
                 f"{gain:+.2f} pp over scratch on the same labels at the same {w['epochs']} epochs.")
    return note + "\n"


def _cell(values: dict, key: str, fmt: str) -> str:
    """A formatted table cell, or a dash for a format that was not exported."""
    return format(values[key], fmt) if key in values else "—"


def render_exports(runs_dir: Path, runs: list[str]) -> str:
    """The edge-export table: one row per image run (``runs``, by folder name) with an export.json
    (written by `make export`). LM runs in the same folder have their own export table (report_lm)."""
    exports = [(run, read_json(p)) for run in sorted(runs)
               if (p := Path(runs_dir) / run / "export" / "export.json").is_file()]
    if not exports:
        return ""
    lines = ["", "## Edge export (batch 1, one thread; `make export`)", "",
             "| run | ONNX KB | int8 KB | int8 / float32 size | accuracy % eager → int8 "
             "| eager µs | .pt2 µs | ONNX Runtime µs | int8 µs |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for run, e in exports:
        size = {f: e["files"][f]["bytes"] / 1024 for f in e["files"]}
        lat, acc = e["latency_us_batch1_1thread"], e["test_acc"]
        int8_acc = _cell({k: 100 * v for k, v in acc.items()}, "int8", ".2f")
        refused = e.get("refused", {}).get("int8")
        if refused:
            int8_acc = f"int8 refused: {refused['acc_change_pp']:+.2f} pp"
        lines.append(f"| {run} | {_cell(size, 'onnx', '.1f')} | {_cell(size, 'int8', '.1f')} | "
                     f"{_cell(e, 'int8_size_ratio', '.3f')} | {100 * acc['eager']:.2f} → {int8_acc} | "
                     f"{lat['eager']:.0f} | {_cell(lat, 'pt2', '.0f')} | {_cell(lat, 'onnx', '.0f')} | "
                     f"{_cell(lat, 'int8', '.0f')} |")
    return "\n".join(lines) + "\n"


README_START, README_END = "<!-- results:start (written by make readme-results) -->", "<!-- results:end -->"


def results_section(rows: list[dict], experiments: str = "") -> str:
    """The part of the report that also goes into the README: who won, every arm, and the
    experiments' own write-ups (``views-experiment[-from<tag>].md`` from `make experiment-views`)."""
    if not rows:
        return render_markdown(rows)
    return ("Which configuration won, per student (best mean test accuracy over seeds):\n\n"
            + render_winners(rows) + _why_note(rows) + "\nEvery arm:\n\n" + render_markdown(rows)
            + (f"\n{experiments}" if experiments else ""))


def _experiments(reports_dir: Path) -> str:
    """Experiment write-ups left in the reports directory, in name order."""
    return "\n".join(p.read_text() for p in sorted(Path(reports_dir).glob("*-experiment*.md")))


def render_code_versions(runs: list[dict]) -> str:
    """A note on runs made by other code than this (``pipeline.provenance``): nothing is rebuilt for a
    code change, so the report says which figures came from which code."""
    other: dict[str, list[str]] = {}
    for run in runs:
        made_by = other_code(run)
        if made_by is not None:
            other.setdefault(made_by, []).append(run["run"])
    if not other:
        return ""
    lines = [f"- {len(names)} by {made_by}: {', '.join(names[:3])}{', ...' if len(names) > 3 else ''}"
             for made_by, names in sorted(other.items())]
    return (f"\n## Code versions\n\n{sum(map(len, other.values()))} of {len(runs)} runs were made by other code than "
            f"this (softcache {code_version()['softcache_version']}, sources {code_version()['source_digest']}); their "
            f"figures stand as measured, and rerunning them (`make clean-students`) compares like with like:\n\n"
            + "\n".join(lines) + "\n")


def write_report(runs_dir: Path, out: Path, readme: Path | None = None) -> str:
    """Write report.md and its PNG figures next to it, optionally refresh a results document's
    block (``readme``; figures copied to results/ beside it); return the Markdown."""
    from pipeline.results.plots import (
        draw_all,  # matplotlib is imported only by the report
    )

    runs = collect_runs(runs_dir)
    rows = summarize(runs)
    figures = draw_all(rows, out.parent)
    experiments = _experiments(out.parent)
    lm = render_lm(runs_dir)
    images = ("" if lm and not rows
              else results_section(rows, experiments) + render_exports(runs_dir, [r["run"] for r in runs]))
    text = "# softcache results\n\n" + images + lm + render_code_versions(runs)
    if figures:
        text += "\n## Figures\n\n" + "\n".join(f"![{name[:-4]}]({name})" for name in figures) + "\n"
    with atomic_path(out) as tmp:
        tmp.write_text(text)
    if readme is not None:
        _update_readme(readme, results_section(rows, experiments), out.parent, figures)
    return text


def _update_readme(readme: Path, section: str, figure_dir: Path, figures: list[str]) -> None:
    """Replace the text between the results document's markers with this report's tables; its figures
    go to ``results/`` beside the document."""
    original = readme.read_text()
    start, end = original.find(README_START), original.find(README_END)
    if start < 0 or end < start:
        raise UsageError(f"{readme} has no results block ({README_START} ... {README_END}); add the two markers")
    shown = [f for f in ("scratch_vs_distilled.png", "calibration.png") if f in figures]
    target = readme.parent / "results"
    target.mkdir(parents=True, exist_ok=True)
    for name in shown:
        shutil.copyfile(figure_dir / name, target / name)
    block = (f"{README_START}\n_Generated by `make readme-results` from `data/runs/` on {dt.date.today().isoformat()}; "
             f"full report with every figure: `data/reports/report.md`._\n\n" + section
             + "".join(f"\n![{n[:-4]}](results/{n})\n" for n in shown))
    with atomic_path(readme) as tmp:
        tmp.write_text(original[:start] + block + original[end:])

"""Commands `inspect` and `verify`: look at a cache, or check it before trusting it."""

import json
from pathlib import Path

import click

from pipeline.cache.ensemble import check_recorded_accuracy
from pipeline.cache.reader import CacheExpectations, LogitCache
from pipeline.data.prepare import load_prepared
from pipeline.errors import UsageError
from pipeline.provenance import other_code
from pipeline.teacher.rescore import rescore_sample, tolerance_for
from pipeline.teacher.source import load_teacher


def _folder(attrs) -> str:
    if "dataset_source" not in attrs:
        return ""
    r = json.loads(attrs["dataset_source"])
    skipped = f", {len(r['skipped'])} unreadable left out" if r["skipped"] else ""
    return (f", from image folder {r['folder']} ({r['files']} files{skipped}; paths sha256 {r['paths_digest'][:12]}, "
            f"contents sha256 {r['contents_digest'][:12]})")


_trust_option = click.option("--trust-undigested-cache", "trust", is_flag=True,
                             help="Accept a cache without digests (an older softcache's): its values and attributes "
                                  "then prove nothing.")


@click.command("inspect")
@click.argument("cache", type=click.Path(path_type=Path))
@click.option("--T", "T", type=click.FloatRange(0.01, 100), default=4.0, show_default=True,
              help="Temperature for the entropy column.")
@_trust_option
def inspect(cache, T, trust):
    """Print what a cache holds (it is verified first)."""
    c = LogitCache(cache, trust_undigested=trust)
    p = c.soft_targets(T)
    entropy = float(-(p * p.clamp_min(1e-12).log()).sum(1).mean())
    rows = [
        ("file", f"{cache} ({cache.stat().st_size / 1e6:.2f} MB)"),
        ("rows", f"{c.train_rows} train, {len(c.labels('test'))} test"
                 + (f" (the last {c.transfer_rows} train rows: transfer set {c.attrs.get('transfer')}, unlabelled)"
                    if c.transfer_rows else "")),
        ("classes", c.num_classes),
        ("views", f"{c.views} per image" + (f", mixup pairs (Beta {c.mixup:g})" if c.mixup else "")
                  if c.views else "1 per image (the clean image)"),
        ("members", f"ensemble of {c.members}, test accuracy each: "
                    + ", ".join(f"{100 * a:.2f}%" for a in c.attrs["member_test_acc"]) if c.members else "one teacher"),
        ("published", c.attrs["published_record"] if c.attrs.get("published") else "no (made here)"),
        ("reading", "in memory" if c.in_memory else "streamed from the file (larger than the memory limit)"),
        ("temperature", f"{c.temperature:g} (logits stored divided by it)"),
        ("storage", f"{c.attrs.get('storage', 'full')}, {c.attrs.get('dtype', 'float32')}"
                    + (f", top-{c.attrs['topk']} + tail" if c.attrs.get("topk") else "")),
        ("bytes/sample", f"{cache.stat().st_size / (c.train_rows + len(c.labels('test'))):.1f} (whole file)"),
        ("teacher", f"{c.attrs.get('teacher')} {c.attrs.get('teacher_fingerprint')}"),
        ("dataset", f"{c.attrs.get('dataset')} {c.attrs.get('dataset_fingerprint')}" + _folder(c.attrs)),
        ("teacher acc", f"train {100 * c.teacher_accuracy('train'):.2f}%, test {100 * c.teacher_accuracy('test'):.2f}% "
                        f"(recorded at training: {100 * c.attrs.get('teacher_test_acc', float('nan')):.2f}%)"),
        (f"entropy @T={T:g}", f"{entropy:.3f} nats (max {float(p.new_tensor(c.num_classes).log()):.3f})"),
        ("created", c.attrs.get("created")),
        ("made by", other_code(c.attrs) or f"this code (softcache {c.attrs['softcache_version']}, sources "
                                            f"{c.attrs['source_digest']})"),
        ("fingerprint", c.fingerprint),
    ]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        click.echo(f"{k:<{width}}  {v}")


@click.command("verify")
@click.argument("cache", type=click.Path(path_type=Path))
@click.option("--dataset", type=click.Path(path_type=Path), help="Also check it was made from this prepared dataset.")
@click.option("--teacher", help="Also re-score a seeded sample of rows with this teacher (checkpoint, model file or "
              "module:factory) and compare them with the cached logits; needs --dataset.")
@click.option("--teacher-weights", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="State dict for a module:factory --teacher.")
@click.option("--sample", type=click.IntRange(min=1), default=256, show_default=True,
              help="Rows re-scored per split with --teacher.")
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=0, show_default=True,
              help="Draws the re-scored rows.")
@_trust_option
def verify(cache, dataset, teacher, teacher_weights, sample, seed, trust):
    """Check completeness, checksums, the digests written with the values, shapes, values, order, the
    teacher's recorded accuracy (recomputed from the cached logits), and (with --dataset) provenance;
    with --teacher, that the cached logits are that teacher's."""
    expect, d = CacheExpectations(), None
    if teacher is not None and dataset is None:
        raise click.UsageError("--teacher re-scores the dataset's images: give --dataset too")
    if dataset is not None:
        d = load_prepared(dataset)
        expect = CacheExpectations(dataset_fingerprint=d.fingerprint, num_classes=d.num_classes,
                                   train_rows=len(d.y_train))
    c = LogitCache(cache, expect, trust_undigested=trust)
    recorded, _ = check_recorded_accuracy(c)
    digests = ("every dataset and attribute matches the digest written with it" if c.digests_checked
               else "no digests recorded, accepted as asked (--trust-undigested-cache): checksums only")
    made_by = other_code(c.attrs)
    click.echo(f"{cache}: OK ({c.train_rows} train rows, {c.num_classes} classes, teacher {100 * recorded:.2f}% "
               f"on the test set as recorded, fingerprint {c.fingerprint}; {digests}; made by "
               f"{made_by or 'this code'})")
    if teacher is None:
        return
    checks = rescore_sample(c, load_teacher(teacher, teacher_weights), d, sample=sample, seed=seed)
    for check in checks:
        click.echo(f"  re-scored {check.rows} {check.split} rows: largest difference {check.max_difference:.2e} of "
                   f"the row's scale (tolerance {tolerance_for(c):g}), {check.mismatched} differ")
    bad = [check for check in checks if check.mismatched]
    if bad:
        raise UsageError(f"cache {cache}: {bad[0].mismatched} of {bad[0].rows} re-scored {bad[0].split} rows (the "
                         f"first is row {bad[0].first_mismatch}) are not {teacher}'s logits: the cache was edited or "
                         f"made by another teacher", fix="teacher-logits")

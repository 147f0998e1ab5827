"""Command `verify`: check a cache before trusting it (every reader check, its recorded accuracy, and a
sample re-scored by its teacher)."""

from pathlib import Path

import click

from pipeline.cache.ensemble import check_recorded_accuracy
from pipeline.cache.reader import CacheExpectations, LogitCache
from pipeline.data.prepare import load_prepared
from pipeline.errors import UsageError
from pipeline.provenance import other_code
from pipeline.teacher.rescore import rescore_sample, tolerance_for
from pipeline.teacher.source import load_teacher
from stages.options import trust_option


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
@trust_option()
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

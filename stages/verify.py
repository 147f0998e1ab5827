"""Command `verify`: check a cache before trusting it (every reader check, its recorded accuracy, and a
sample re-scored by its teacher)."""

from pathlib import Path

import click

from pipeline.teacher.rescore import verify_cache
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
    for line in verify_cache(cache, dataset=dataset, teacher=teacher, teacher_weights=teacher_weights,
                             sample=sample, seed=seed, trust_undigested=trust):
        click.echo(line)

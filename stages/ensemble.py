"""Stage `ensemble`: one cache from the caches of several teachers, without running a teacher."""

from pathlib import Path

import click

from pipeline.cache.ensemble import write_ensemble
from pipeline.config import EnsembleConfig, from_options
from stages.options import setting_option


@click.command("ensemble")
@click.option("--member", "members", multiple=True, type=click.Path(path_type=Path), required=True,
              help="A member's cache (.h5, every logit stored); give one per member, at least 2.")
@click.option("--record", "records", multiple=True, type=click.Path(path_type=Path),
              help="A member's teacher.json, in the same order; each member must come from its teacher.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Ensemble cache (.h5) to write.")
@setting_option("CACHE_DTYPE", "--dtype", "dtype")
def ensemble(members, records, out, dtype):
    """Combine member caches into one ensemble cache (each member's logits and their mean)."""
    s = write_ensemble(from_options(EnsembleConfig, members=members, records=records, out=out, dtype=dtype))
    each = ", ".join(f"{name} {100 * acc:.2f}%" for name, acc in zip(s["member_names"], s["member_test_acc"]))
    click.echo(f"{out}: ensemble of {s['members']} test accuracy {100 * s['teacher_test_acc']:.2f}% (mean of "
               f"logits), {100 * s['ensemble_probs_test_acc']:.2f}% (mean of probabilities); members: {each}")

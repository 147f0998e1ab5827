"""Stage `ensemble`: one cache from the caches of several teachers, without running a teacher."""

import click

from pipeline.cache.ensemble import write_ensemble
from pipeline.config import EnsembleConfig, from_options
from stages.options import config_options


@click.command("ensemble")
@config_options(EnsembleConfig, flags={"members": "--member", "records": "--record"})
def ensemble(members, records, out, dtype):
    """Combine member caches into one ensemble cache (each member's logits and their mean)."""
    s = write_ensemble(from_options(EnsembleConfig, members=members, records=records, out=out, dtype=dtype))
    each = ", ".join(f"{name} {100 * acc:.2f}%" for name, acc in zip(s["member_names"], s["member_test_acc"]))
    click.echo(f"{out}: ensemble of {s['members']} test accuracy {100 * s['teacher_test_acc']:.2f}% (mean of "
               f"logits), {100 * s['ensemble_probs_test_acc']:.2f}% (mean of probabilities); members: {each}")

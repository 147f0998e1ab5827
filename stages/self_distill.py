"""Stage `self-distill`: a student taught without a teacher (METHOD=pskd, byot or cskd)."""

import click

from pipeline.config import SelfDistillConfig, from_options
from pipeline.student.self_distill import METHOD_NAMES
from pipeline.student.self_distill import self_distill as run_self_distill
from stages.options import config_options, labels_option


@click.command("self-distill")
@config_options(SelfDistillConfig, override={"labels": labels_option})
def self_distill(**options):
    """Train a student by self-distillation; resumes a killed run from its last epoch."""
    cfg = from_options(SelfDistillConfig, **options)
    name = METHOD_NAMES[cfg.method]

    def report_epoch(epoch: int, figures: dict) -> None:
        scored = f", test accuracy {100 * figures['test_acc']:.2f}%" if "test_acc" in figures else ""
        click.echo(f"{name} epoch {epoch}/{cfg.epochs}: train loss {figures['train_loss']:.4f}{scored}, "
                   f"{figures['seconds']:.1f} s", err=True)

    m = run_self_distill(cfg, on_epoch=report_epoch)
    resumed = f" (resumed after epoch {m['resumed_from_epoch']})" if m["resumed_from_epoch"] else ""
    knobs = " ".join(f"{k}={v:g}" for k, v in cfg.knobs.items())
    click.echo(f"{cfg.out_dir}: {m['student']} ({m['params']:,} params) {name} {knobs}: "
               f"test accuracy {100 * m['test_acc']:.2f}%, ECE {100 * m['ece']:.2f}%{resumed}")

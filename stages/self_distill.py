"""Stage `self-distill`: PS-KD, a student taught by its own previous epoch (no teacher)."""

import click

from pipeline.config import SelfDistillConfig, from_options
from pipeline.student.self_distill import self_distill as run_self_distill
from stages.options import config_options


@click.command("self-distill")
@config_options(SelfDistillConfig)
def self_distill(**options):
    """Train with progressive self-knowledge distillation; resumes a killed run from its last epoch."""
    cfg = from_options(SelfDistillConfig, **options)

    def report_epoch(epoch: int, figures: dict) -> None:
        click.echo(f"epoch {epoch}/{cfg.epochs}: alpha_t {figures['alpha_t']:.3f}, test accuracy "
                   f"{100 * figures['test_acc']:.2f}%, {figures['seconds']:.1f} s", err=True)

    m = run_self_distill(cfg, on_epoch=report_epoch)
    resumed = f" (resumed after epoch {m['resumed_from_epoch']})" if m["resumed_from_epoch"] else ""
    click.echo(f"{cfg.out_dir}: {m['student']} ({m['params']:,} params) PS-KD ALPHA_T={cfg.alpha_T:g}: "
               f"test accuracy {100 * m['test_acc']:.2f}%, ECE {100 * m['ece']:.2f}%{resumed}")

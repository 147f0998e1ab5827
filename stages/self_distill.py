"""Stage `self-distill`: PS-KD, a student taught by its own previous epoch (no teacher)."""

from pathlib import Path

import click

from pipeline.config import SelfDistillConfig, from_options
from pipeline.models import list_students
from pipeline.student.self_distill import self_distill as run_self_distill
from stages.options import log_option


@click.command("self-distill")
@click.option("--dataset", type=click.Path(path_type=Path), required=True, help="Prepared dataset (.npz).")
@click.option("--out-dir", type=click.Path(path_type=Path), required=True, help="Run directory to write.")
@click.option("--student", help=f"One of: {', '.join(list_students())}.")
@click.option("--alpha-T", "alpha_T", type=float, help="Weight of the previous epoch's predictions at the last epoch, in (0, 1] (0.8).")
@click.option("--seed", type=int)
@click.option("--epochs", type=int)
@click.option("--batch-size", type=int)
@click.option("--lr", type=float)
@click.option("--augment/--no-augment", default=None, help="Random crop + flip (default off, as for students).")
@log_option
@click.option("--threads", type=int, help="torch CPU threads (0: torch's default).")
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

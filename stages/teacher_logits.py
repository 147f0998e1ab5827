"""Stage `teacher-logits`: run the teacher once over the data and write the HDF5 cache."""

import click

from pipeline.config import LogitsConfig, from_options
from pipeline.teacher.logits_pass import write_teacher_logits
from stages.options import config_options


@click.command("teacher-logits")
@config_options(LogitsConfig)
def teacher_logits(**options):
    """Cache the teacher's logits for the train and test splits.

    Killed part-way, the same command resumes from the last finished chunk. Launched
    by torchrun, each rank computes its slice and rank 0 writes the one cache."""
    summary = write_teacher_logits(from_options(LogitsConfig, **options))
    if summary["rank"] != 0:          # under torchrun, rank 0 speaks for the pass
        return
    resumed = f", {summary['resumed_rows']} rows resumed from an earlier run" if summary["resumed_rows"] else ""
    views = f" + {summary['rows']['train_views']} cached views" if "train_views" in summary["rows"] else ""
    if summary["transfer_labels_ignored"]:
        click.echo(f"note: TRANSFER={options['transfer']} also holds labels; a transfer set is unlabelled, so they "
                   f"were ignored (labelled images belong in DATASET)", err=True)
    click.echo(f"{summary['path']}: {summary['rows']['train']} train + {summary['rows']['test']} test rows{views} "
               f"in {summary['seconds']:.1f} s ({summary['images_per_second']:.0f} images/s{resumed})")

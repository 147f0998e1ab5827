"""Stage `teacher-logits`: run the teacher once over the data and write the HDF5 cache."""

import click

from pipeline.config import LogitsConfig, from_options
from pipeline.teacher.logits_pass import write_teacher_logits
from stages.options import PATH, config_option, dataset_option, path_option, setting_option


@click.command("teacher-logits")
@click.option("--teacher", required=True,
              help="softcache teacher checkpoint, a TorchScript file, a torch.export .pt2 file, or module:factory.")
@setting_option("TEACHER_WEIGHTS", type=PATH, parse=False)
@dataset_option
@path_option("--out", "Cache file (.h5) to write.")
@setting_option("TEACHER_T", "--temperature", "temperature")
@setting_option("CACHE_DTYPE", "--dtype", "dtype")
@setting_option("CACHE_TOPK", "--topk", "topk")
@config_option(LogitsConfig, "chunk_rows", "Rows per resumable chunk.")
@setting_option("VIEWS")
@setting_option("VIEW_SEED")
@setting_option("MIXUP")
@setting_option("TRANSFER", type=PATH, parse=False)
@setting_option("DEVICE")
@config_option(LogitsConfig, "batch_size", "Images per teacher forward; 0: the device's (64 on a CPU, 1024 on a GPU)")
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

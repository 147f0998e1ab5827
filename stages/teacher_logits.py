"""Stage `teacher-logits`: run the teacher once over the data and write the HDF5 cache."""

from pathlib import Path

import click

from pipeline.config import LogitsConfig, from_options
from pipeline.teacher.logits_pass import write_teacher_logits


@click.command("teacher-logits")
@click.option("--teacher", required=True,
              help="softcache teacher checkpoint, a TorchScript file, a torch.export .pt2 file, or module:factory.")
@click.option("--teacher-weights", type=click.Path(path_type=Path),
              help="Weights (a state dict, loaded with weights_only=True) for a module:factory teacher.")
@click.option("--dataset", type=click.Path(path_type=Path), required=True, help="Prepared dataset (.npz).")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Cache file (.h5) to write.")
@click.option("--temperature", type=float, help="TEACHER_T: logits are stored divided by it (default 1).")
@click.option("--dtype", type=click.Choice(["float32", "float16"]))
@click.option("--topk", type=int, help="CACHE_TOPK: store only the k largest logits + the tail (0: all).")
@click.option("--chunk-rows", type=int, help="Rows per resumable chunk (default 4096).")
@click.option("--views", type=int, help="VIEWS: also cache K augmented views of every training image (1: none).")
@click.option("--view-seed", type=int, help="VIEW_SEED: draws the views' crops and flips (default 0).")
@click.option("--mixup", type=float, help="MIXUP=a: make every view a mixup pair, lambda ~ Beta(a, a) (0: off).")
@click.option("--transfer", type=click.Path(path_type=Path),
              help="TRANSFER: an .npz of unlabelled images; their logits are cached after the train rows.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]))
@click.option("--batch-size", type=int, help="Images per teacher forward (default 0: 64 on a CPU, 1024 on a GPU).")
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

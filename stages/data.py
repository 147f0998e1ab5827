"""Stage `data`: find the dataset, read it, write the prepared .npz with its fingerprint."""

from pathlib import Path

import click

from pipeline.config import DataConfig, from_options
from pipeline.datasets import LAYOUTS, limit_train, load_dataset, save_prepared


@click.command("data")
@click.option("--dataset", help="'fashion-mnist', an .npz file, or a directory of IDX files.")
@click.option("--source", type=click.Path(path_type=Path), help="Read the data from here first.")
@click.option("--raw-dir", type=click.Path(path_type=Path), help="Where user-supplied/downloaded IDX files live.")
@click.option("--system-dir", type=click.Path(path_type=Path), help="System copy (default: the Debian package's).")
@click.option("--limit", type=int, help="Keep only the first N training samples (0: all).")
@click.option("--layout", type=click.Choice(LAYOUTS),
              help="Image axes of an .npz (default auto: refuses ambiguous shapes).")
@click.option("--no-download", "download", flag_value=False, default=None, help="Never download.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Prepared .npz to write.")
def data(**options):
    """Prepare the dataset for every later stage."""
    cfg = from_options(DataConfig, **options)
    found = load_dataset(cfg.dataset, cfg.source, cfg.raw_dir, cfg.system_dir, cfg.download, cfg.layout)
    dataset = limit_train(found, cfg.limit)
    save_prepared(dataset, cfg.out)
    click.echo(f"{cfg.out}: {dataset.name}, {len(dataset.y_train)} train / {len(dataset.y_test)} test, "
               f"{dataset.num_classes} classes, images {dataset.image_shape}, fingerprint {dataset.fingerprint}")

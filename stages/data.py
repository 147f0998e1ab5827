"""Stage `data`: find the dataset, read it, write the prepared file with its fingerprint: an .npz,
or for an image folder an HDF5 file that every stage reads a batch at a time."""

from pathlib import Path

import click

from pipeline.config import DataConfig, from_options
from pipeline.data.image_folder import is_image_folder, prepare_folder
from pipeline.data.prepare import (
    LAYOUTS,
    limit_train,
    load_dataset,
    load_prepared,
    prepared_folder_is_current,
    save_prepared,
)


@click.command("data")
@click.option("--dataset", help="'fashion-mnist', an .npz file, an image folder, or a directory of IDX files.")
@click.option("--source", type=click.Path(path_type=Path), help="Read the data from here first.")
@click.option("--raw-dir", type=click.Path(path_type=Path), help="Where user-supplied/downloaded IDX files live.")
@click.option("--system-dir", type=click.Path(path_type=Path), help="System copy (default: the Debian package's).")
@click.option("--limit", type=int, help="Keep only the first N training samples (0: all).")
@click.option("--layout", type=click.Choice(LAYOUTS),
              help="Image axes of an .npz (default auto: refuses ambiguous shapes).")
@click.option("--image-size", help="IMAGE_SIZE of an image folder: S or HxW (scale to cover, crop the center).")
@click.option("--channels", type=click.Choice(["auto", "1", "3"]), help="CHANNELS of an image folder.")
@click.option("--bad-images", type=click.Choice(["fail", "skip"]),
              help="BAD_IMAGES: stop at an unreadable image (fail, the default) or leave it out and count it.")
@click.option("--test-fraction", type=float, help="TEST_FRACTION held out when the folder has no test/.")
@click.option("--split-seed", type=int, help="SPLIT_SEED: draws held-out files and the training rows' order.")
@click.option("--no-download", "download", flag_value=False, default=None, help="Never download.")
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="Prepared file to write: .npz, or .h5 (images read from disk).")
def data(**options):
    """Prepare the dataset for every later stage."""
    cfg = from_options(DataConfig, **options)
    folder = Path(cfg.dataset)
    if folder.is_dir() and is_image_folder(folder) and cfg.out.is_file() and prepared_folder_is_current(
            cfg.out, folder, cfg.folder_options(), cfg.limit):
        click.echo(f"{cfg.out}: up to date with {folder} (every file's digest checked)")
        return
    if folder.is_dir() and is_image_folder(folder) and cfg.out.suffix == ".h5":   # decoded straight to disk
        prepare_folder(folder, cfg.out, cfg.folder_options(), cfg.limit)
        dataset = load_prepared(cfg.out, verify=False)   # the writer has just read every row back for its fingerprint
    else:
        found = load_dataset(cfg.dataset, cfg.source, cfg.raw_dir, cfg.system_dir, cfg.download, cfg.layout,
                             cfg.folder_options())
        dataset = limit_train(found, cfg.limit)
        save_prepared(dataset, cfg.out)
    skipped = f", {len(dataset.source.skipped)} unreadable images left out" if dataset.source else ""
    click.echo(f"{cfg.out}: {dataset.name}, {len(dataset.y_train)} train / {len(dataset.y_test)} test, "
               f"{dataset.num_classes} classes, images {dataset.image_shape}, fingerprint {dataset.fingerprint}"
               + (skipped if dataset.source and dataset.source.skipped else ""))

"""Stage `data`: find the dataset, read it, write the prepared file with its fingerprint: an .npz,
or for an image folder an HDF5 file that every stage reads a batch at a time."""


import click

from pipeline.config import DataConfig, from_options
from pipeline.data.prepare import prepare, prepare_corpus
from pipeline.data.text import is_text_corpus
from stages.options import config_options


@click.command("data")
@config_options(DataConfig)
def data(**options):
    """Prepare the dataset for every later stage."""
    cfg = from_options(DataConfig, **options)
    if is_text_corpus(cfg.dataset, cfg.tokenizer):
        a = prepare_corpus(cfg)
        python = f", Python {a['python']}" if a["python"] else ""
        click.echo(("up to date: " if a.get("unchanged") else "") + f"{cfg.out}: {a['corpus']} ({a['corpus_fingerprint']}{python}), "
                   f"tokenizer {a['tokenizer']} (V = {a['vocab_size']:,}): {a['train_tokens']:,} train / "
                   f"{a['val_tokens']:,} val / {a['test_tokens']:,} test tokens, fingerprint {a['fingerprint']}")
        return
    dataset = prepare(cfg)
    if dataset is None:
        click.echo(f"{cfg.out}: up to date with {cfg.dataset} (every file's digest checked)")
        return
    skipped = dataset.source.skipped if dataset.source else ()
    click.echo(f"{cfg.out}: {dataset.name}, {len(dataset.y_train)} train / {len(dataset.y_test)} test, "
               f"{dataset.num_classes} classes, images {dataset.image_shape}, fingerprint {dataset.fingerprint}"
               + (f", {len(skipped)} unreadable images left out" if skipped else ""))

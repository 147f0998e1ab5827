"""Stage `data`: find the dataset, read it, write the prepared file with its fingerprint: an .npz,
or for an image folder an HDF5 file that every stage reads a batch at a time."""


import click

from pipeline.config import DataConfig, from_options
from pipeline.data.prepare import prepare, prepare_corpus
from pipeline.data.text import is_text_corpus
from stages.options import PATH, path_option, setting_option


@click.command("data")
@setting_option("DATASET", parse=False)
@setting_option("SOURCE", type=PATH, parse=False)
@path_option("--raw-dir", "Where user-supplied/downloaded IDX files live.", required=False)
@path_option("--system-dir", "System copy (default: the Debian package's).", required=False)
@setting_option("LIMIT")
@setting_option("LAYOUT")
@setting_option("IMAGE_SIZE")
@setting_option("CHANNELS")
@setting_option("BAD_IMAGES")
@setting_option("TEST_FRACTION")
@setting_option("SPLIT_SEED")
@click.option("--no-download", "download", flag_value=False, default=None, help="Never download.")
@click.option("--tokenizer", help="Text: bytes (the default for a text DATASET), bpe-N (trained here on the train "
              "split) or a local tokenizer.json; DATASET is then 'stdlib', a folder of text or a .jsonl.")
@path_option("--out", "Prepared file to write: .npz, or .h5 (images read from disk).")
def data(**options):
    """Prepare the dataset for every later stage."""
    cfg = from_options(DataConfig, **options)
    if is_text_corpus(cfg.dataset, cfg.tokenizer):
        a = prepare_corpus(cfg)
        click.echo(f"{cfg.out}: {a['corpus']} ({a['corpus_fingerprint']}{', Python ' + a['python'] if a['python'] else ''}), "
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

"""Stage `export`: turn a finished student run into ONNX, TorchScript and int8 files, checked."""

from pathlib import Path

import click

from pipeline.config import EXPORT_FORMATS, ExportConfig, from_options
from pipeline.results.export import export_run


@click.command("export")
@click.option("--run-dir", type=click.Path(path_type=Path), required=True, help="A finished student run (data/runs/<name>).")
@click.option("--out-dir", type=click.Path(path_type=Path), help="Where to write (default: <run-dir>/export).")
@click.option("--dataset", type=click.Path(path_type=Path), help="Prepared dataset (default: the run's own).")
@click.option("--formats", help=f"Comma-separated subset of: {','.join(EXPORT_FORMATS)} (default: all).")
@click.option("--int8-max-drop-pp", type=float, help="Refuse an int8 model losing more test accuracy than this (0.5).")
@click.option("--skip-refused", is_flag=True, default=None,
              help="Leave out a format that misses its check (recorded in export.json) instead of failing.")
@click.option("--threads", type=int, help="torch CPU threads (0: torch's default).")
def export(formats, **options):
    """Export a student for edge inference and prove it matches the trained model."""
    if formats is not None:
        options["formats"] = tuple(f.strip() for f in formats.split(",") if f.strip())
    cfg = from_options(ExportConfig, **options)
    r = export_run(cfg)
    lat = r["latency_us_batch1_1thread"]
    for fmt, why in r.get("refused", {}).items():
        click.echo(f"{cfg.destination}: {fmt} refused: {why['acc_change_pp']:+.2f} pp of test accuracy "
                   f"(budget {why['budget_pp']:g} pp); left out, the other formats are kept")
    for fmt in (f for f in cfg.formats if f in r["files"]):
        extra = (f", max |Δlogit| {r['parity'][fmt]['max_abs_diff']:.1e}" if fmt in r["parity"]
                 else f", accuracy change {r['int8_acc_change_pp']:+.2f} pp ({r['int8_choice']['chosen']} calibration)")
        click.echo(f"{cfg.destination / r['files'][fmt]['path']}: {r['files'][fmt]['bytes']:,} bytes, "
                   f"test accuracy {100 * r['test_acc'][fmt]:.2f}%{extra}, "
                   f"batch-1 1-thread {lat[fmt]:.0f} us (eager {lat['eager']:.0f} us)")

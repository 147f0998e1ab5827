"""Stage `export`: turn a finished student run into ONNX, TorchScript and int8 files, checked."""


import click

from pipeline.config import ExportConfig, from_options
from pipeline.results.export import export_run
from stages.options import config_option, path_option, setting_option


@click.command("export")
@path_option("--run-dir", "A finished student run (data/runs/<name>).")
@path_option("--out-dir", "Where to write (default: <run-dir>/export).", required=False)
@path_option("--dataset", "Prepared dataset (default: the run's own).", required=False)
@setting_option("FORMATS")
@config_option(ExportConfig, "int8_max_drop_pp", "Refuse an int8 model losing more test accuracy (pp) than this.")
@click.option("--skip-refused", is_flag=True, default=None,
              help="Leave out a format that misses its check (recorded in export.json) instead of failing.")
@setting_option("THREADS")
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

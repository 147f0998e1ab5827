"""Stage `export`: turn a finished student run into ONNX, TorchScript and int8 files, checked."""


import click

from pipeline.config import ExportConfig, from_options
from pipeline.results.export import export_run
from stages.options import config_options


@click.command("export")
@config_options(ExportConfig)
def export(**options):
    """Export a student for edge inference and prove it matches the trained model."""
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

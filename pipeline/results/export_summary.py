"""What ``softcache export`` reports, for either kind of run: one line per file kept (and per format left out
over its budget), built from the record the exporter wrote, so the command, the report and a notebook say
the same thing."""

from __future__ import annotations

from pathlib import Path

from pipeline.config import ExportConfig
from pipeline.files import read_json
from pipeline.results.export import export_run
from pipeline.results.lm_export import export_lm_run, is_lm_run

__all__ = ["export_any"]


def export_any(cfg: ExportConfig) -> list[str]:
    """Export the run ``cfg`` names, an image student's or a language model's, and say how it went."""
    if is_lm_run(cfg.run_dir):     # a language model: checked on the text's test windows
        r = export_lm_run(cfg.run_dir, cfg.dataset or Path(read_json(cfg.run_dir / "metrics.json")["text"]),
                          cfg.out_dir, parity_atol=cfg.parity_atol, threads=cfg.threads or 1, formats=cfg.formats)
        kept = ", ".join(f"{f} {r['files'][f]['bytes']:,} bytes" for f in r["files"])
        checks = [f"{f} max |Δlogit| {r['files'][f]['max_abs_diff']:.1e}" for f in ("onnx", "pt2", "torchscript")
                  if f in r["files"]]
        if "int8" in r["files"]:
            checks.append(f"int8 {r['files']['int8']['bits_per_byte_change']:+.4f} bits per byte")
        elif "int8" in r["refused"]:
            checks.append(f"int8 refused ({r['refused']['int8']['bits_per_byte_change']:+.4f} bits per byte)")
        return [f"{cfg.destination}: {kept}; {', '.join(checks)}; "
                f"greedy {r['greedy_tokens_per_second_1thread']:.0f} tokens/s on one thread"]
    r = export_run(cfg)
    lat = r["latency_us_batch1_1thread"]
    lines = [f"{cfg.destination}: {fmt} refused: {why['acc_change_pp']:+.2f} pp of test accuracy (budget "
             f"{why['budget_pp']:g} pp); left out, the other formats are kept" for fmt, why in r.get("refused", {}).items()]
    for fmt in (f for f in cfg.formats if f in r["files"]):
        extra = (f", max |Δlogit| {r['parity'][fmt]['max_abs_diff']:.1e}" if fmt in r["parity"]
                 else f", accuracy change {r['int8_acc_change_pp']:+.2f} pp ({r['int8_choice']['chosen']} calibration)")
        lines.append(f"{cfg.destination / r['files'][fmt]['path']}: {r['files'][fmt]['bytes']:,} bytes, test accuracy "
                     f"{100 * r['test_acc'][fmt]:.2f}%{extra}, batch-1 1-thread {lat[fmt]:.0f} us (eager {lat['eager']:.0f} us)")
    return lines

"""Stage `token-logits`: run an LM teacher once over every window of a prepared text file and write the
per-token cache (top-k and the exact tail at each grid temperature)."""

import click

from pipeline.config import TokenLogitsConfig, from_options
from pipeline.teacher.token_pass import write_token_logits
from stages.options import config_option, field_default, grid_option, path_option, setting_option, shown


@click.command("token-logits")
@path_option("--teacher", "An LM teacher: a checkpoint (softcache lm-teacher) or a local Hugging Face folder "
                          "(safetensors weights, its tokenizer.json; never downloaded).")
@path_option("--text", "The prepared text file it reads.")
@path_option("--out", "Per-token cache (.h5) to write.")
@config_option(TokenLogitsConfig, "context", "Tokens per window; 0: the teacher's own context")
@config_option(TokenLogitsConfig, "topk", "Logits kept per position, plus the exact tail; 0: dense")
@config_option(TokenLogitsConfig, "dtype", "Storage of the kept logits: float16 or float32")
@grid_option("--temperatures", "CACHE_TS", float, "The temperatures a student may read at, exactly "
             f"(default {shown(field_default(TokenLogitsConfig, 'temperatures'))}).")
@config_option(TokenLogitsConfig, "batch_size", "Windows per teacher forward")
@config_option(TokenLogitsConfig, "chunk_windows", "Windows per resumable chunk")
@setting_option("DEVICE")
@setting_option("THREADS")
def token_logits(**options):
    """Cache an LM teacher's per-token targets (resumes a killed pass from its last finished chunk)."""
    s = write_token_logits(from_options(TokenLogitsConfig, **options))
    if s["rank"] != 0:
        return
    resumed = f", {s['resumed_windows']} windows resumed" if s["resumed_windows"] else ""
    click.echo(f"{s['path']}: {s['windows']['train']} train + {s['windows']['val']} val + {s['windows']['test']} test "
               f"windows in {s['seconds']:.1f} s ({s['tokens_per_second']:.0f} tokens/s{resumed})")

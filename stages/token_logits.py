"""Stage `token-logits`: run an LM teacher once over every window of a prepared text file and write the
per-token cache (top-k and the exact tail at each grid temperature)."""

import click

from pipeline.config import TokenLogitsConfig, from_options
from pipeline.teacher.lm_pass import write_token_logits
from stages.options import config_options


@click.command("token-logits")
@config_options(TokenLogitsConfig)
def token_logits(**options):
    """Cache an LM teacher's per-token targets (resumes a killed pass from its last finished chunk)."""
    s = write_token_logits(from_options(TokenLogitsConfig, **options))
    if s["rank"] != 0:
        return
    resumed = f", {s['resumed_windows']} windows resumed" if s["resumed_windows"] else ""
    click.echo(f"{s['path']}: {s['windows']['train']} train + {s['windows']['val']} val + {s['windows']['test']} test "
               f"windows in {s['seconds']:.1f} s ({s['tokens_per_second']:.0f} tokens/s{resumed})")

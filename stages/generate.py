"""Command `generate`: what an LM student writes from a prompt (greedy), so a user sees the model."""

import click

from pipeline.data.windows import text_tokenizer
from pipeline.results.lm_export import check_model_tokenizer, prompt_ids
from pipeline.results.lm_export import generate as continue_greedily
from pipeline.training.checkpoint import load_checkpoint
from pipeline.training.run_dir import MODEL_FILE
from stages.options import PATH


@click.command("generate")
@click.option("--run-dir", type=PATH, required=True, help="A finished LM student run (or an lm-teacher's folder).")
@click.option("--text", type=PATH, required=True, help="The prepared text it learned from (its tokenizer).")
@click.option("--prompt", default="def ", show_default=True, help="What it continues.")
@click.option("--tokens", type=click.IntRange(1, 100_000), default=200, show_default=True, help="Tokens to write.")
def generate(run_dir, text, prompt, tokens):
    """Print the prompt and the student's greedy continuation."""
    path = run_dir / MODEL_FILE if (run_dir / MODEL_FILE).is_file() else run_dir / "teacher.pt"
    model, ckpt = load_checkpoint(path, "lm", "student")
    tokenizer = text_tokenizer(text)
    check_model_tokenizer(model, ckpt, tokenizer, text)
    click.echo(prompt + tokenizer.decode(continue_greedily(model.eval(), prompt_ids(prompt, tokenizer), tokens)))

"""Causal language models that ``transformers`` defines: a Hugging Face teacher's wrapper, and students built
from a config with no weights (``STUDENT=hf:<folder or config.json>``, or a named preset such as
``hf-llama-small``).

Only the library's own architectures are built: a config that maps to code of its own (``auto_map``) is
refused, as is a ``model_type`` that ``transformers`` lacks or that is no causal LM. A student's vocabulary
is the cache's: a config whose ``vocab_size`` differs, or whose folder ships another tokenizer, is refused
before a weight is allocated. A finished student is also written as a folder that
``AutoModelForCausalLM.from_pretrained(folder, local_files_only=True, use_safetensors=True)`` loads (:func:`save_hf_folder`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import nn

from pipeline.digests import definition_fingerprint
from pipeline.errors import UsageError

__all__ = ["HFCausalLM", "PRESETS", "is_hf_spec", "student_config", "build_hf_lm", "save_hf_folder",
           "hf_config_context", "transformers_quiet"]

# Sized like softcache's own lm-tiny and lm-small (width, depth, heads; tied embeddings; no dropout), so the two
# families compare at equal parameter counts. Llama's SwiGLU MLP has three matrices: 8/3 of the width makes it
# the size of GPT-2's 4x two-matrix MLP.
PRESETS: dict[str, dict] = {
    "hf-llama-tiny": {"model_type": "llama", "hidden_size": 64, "intermediate_size": 172, "num_hidden_layers": 2,
                      "num_attention_heads": 2, "num_key_value_heads": 2, "tie_word_embeddings": True},
    "hf-llama-small": {"model_type": "llama", "hidden_size": 128, "intermediate_size": 344, "num_hidden_layers": 2,
                       "num_attention_heads": 4, "num_key_value_heads": 4, "tie_word_embeddings": True},
    "hf-gpt2-tiny": {"model_type": "gpt2", "n_embd": 64, "n_layer": 2, "n_head": 2, "resid_pdrop": 0.0,
                     "embd_pdrop": 0.0, "attn_pdrop": 0.0},
    "hf-gpt2-small": {"model_type": "gpt2", "n_embd": 128, "n_layer": 2, "n_head": 4, "resid_pdrop": 0.0,
                      "embd_pdrop": 0.0, "attn_pdrop": 0.0},
}
_CONTEXT_KEYS = ("n_positions", "max_position_embeddings", "n_ctx")


def is_hf_spec(spec: str) -> bool:
    return spec.startswith("hf:") or spec in PRESETS


class HFCausalLM(nn.Module):
    """A transformers causal LM as softcache's LMs look: int64 (B, L) ids -> float (B, L, V) logits, with
    ``vocab_size`` (its output width) and ``context`` (its longest window)."""

    def __init__(self, model: nn.Module, context: int):
        super().__init__()
        self.model, self.context = model, context
        self.vocab_size = int(model.get_output_embeddings().weight.shape[0])

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if ids.shape[1] > self.context:
            raise UsageError(f"a window of {ids.shape[1]} tokens is longer than the model's context of "
                             f"{self.context}; use CONTEXT={self.context} or less")
        return self.model(input_ids=ids, use_cache=False).logits


class transformers_quiet:
    """transformers' remarks and progress bars are not softcache's one line; the hub stays offline."""

    def __enter__(self):
        import transformers
        os.environ.setdefault("HF_HUB_OFFLINE", "1")          # any hidden download fails loudly, never happens
        self._log = transformers.utils.logging
        self._verbosity, self._bars = self._log.get_verbosity(), self._log.is_progress_bar_enabled()
        self._log.set_verbosity_error()
        self._log.disable_progress_bar()
        return transformers

    def __exit__(self, *exc):
        self._log.set_verbosity(self._verbosity)
        if self._bars:
            self._log.enable_progress_bar()


def _transformers():
    try:
        import transformers
    except ImportError:
        raise UsageError("a Hugging Face model needs transformers: pip install 'softcache[hf]'") from None
    return transformers


def hf_config_context(config: dict) -> int:
    """The longest window a config allows (0 where it says nothing)."""
    return next((config[k] for k in _CONTEXT_KEYS if k in config), 0)


def _read_config(spec: str) -> tuple[dict, Path]:
    path = Path(spec[3:])
    file = path / "config.json" if path.is_dir() else path
    if not file.is_file():
        raise UsageError(f"STUDENT={spec}: {file} is missing; give a Hugging Face model folder holding config.json, "
                         f"or the config.json itself (softcache never downloads one)")
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except (ValueError, RecursionError, OSError) as exc:
        raise UsageError(f"STUDENT={spec}: {file} is not a readable JSON config ({str(exc)[:80]})") from None
    if not isinstance(config, dict):
        raise UsageError(f"STUDENT={spec}: {file} is not a config (a JSON object)")
    return config, file.parent


def student_config(spec: str, *, vocab_size: int, context: int, tokenizer_fingerprint: str | None = None) -> dict:
    """The config a student ``spec`` builds, checked against the cache it will learn from: a preset sized to
    the cache's vocabulary and context, or the user's config, whose own sizes must fit."""
    if spec in PRESETS:
        config = dict(PRESETS[spec], vocab_size=vocab_size)
        config["n_positions" if config["model_type"] == "gpt2" else "max_position_embeddings"] = context
        if config["model_type"] == "gpt2":
            config.update(bos_token_id=None, eos_token_id=None)
        return _checked(spec, config)
    config, folder = _read_config(spec)
    config = _checked(spec, config)
    if config.get("vocab_size") != vocab_size:
        size = config.get("vocab_size")
        relation = "smaller than" if isinstance(size, int) and size < vocab_size else "not"
        raise UsageError(f"STUDENT={spec}: its vocab_size {size!r} is {relation} the cache's {vocab_size:,} tokens; "
                         f"set \"vocab_size\": {vocab_size} in its config.json (the student learns the cache's "
                         f"tokenizer's ids)")
    allowed = hf_config_context(config)
    if not isinstance(allowed, int) or allowed < context:
        raise UsageError(f"STUDENT={spec}: its config allows windows of {allowed!r} tokens but the cache's are "
                         f"{context}; raise max_position_embeddings (or n_positions) to {context} or more")
    shipped = folder / "tokenizer.json"
    if tokenizer_fingerprint and shipped.is_file():
        if definition_fingerprint(shipped.read_text(encoding="utf-8", errors="replace")) != tokenizer_fingerprint:
            raise UsageError(f"STUDENT={spec}: {shipped} is another tokenizer than the one the cache's text was "
                             f"prepared with; remove it, or prepare the text with TOKENIZER={shipped}")
    return config


def _checked(spec: str, config: dict) -> dict:
    if config.get("auto_map"):
        raise UsageError(f"STUDENT={spec}: its config maps to code shipped with the model (auto_map), which softcache "
                         f"never runs; use an architecture transformers has itself (llama, gpt2, qwen2, ...)")
    if config.get("quantization_config"):
        raise UsageError(f"STUDENT={spec}: its config asks for quantized weights (quantization_config); a student "
                         f"trains in float32: remove it")
    transformers = _transformers()
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES as causal
    model_type = config.get("model_type")
    if model_type not in transformers.CONFIG_MAPPING:
        raise UsageError(f"STUDENT={spec}: transformers {transformers.__version__} has no architecture "
                         f"'{model_type}'; use one it has (llama, gpt2, qwen2, ...)")
    if model_type not in causal:
        raise UsageError(f"STUDENT={spec}: '{model_type}' is not a causal language model in transformers; a text "
                         f"student must be one (llama, gpt2, qwen2, ...)")
    return {k: v for k, v in config.items() if k not in ("architectures", "transformers_version", "_name_or_path")}


def build_hf_lm(config: dict, context: int) -> HFCausalLM:
    """The model ``config`` describes, freshly initialised (by transformers' own init, from torch's seed)."""
    transformers = _transformers()
    with transformers_quiet():
        try:
            hf_config = transformers.CONFIG_MAPPING[config["model_type"]].from_dict(dict(config))
            model = transformers.AutoModelForCausalLM.from_config(hf_config, attn_implementation="sdpa")
        except Exception as exc:      # a config transformers rejects: its own message, in one line
            raise UsageError(f"transformers cannot build a '{config.get('model_type')}' from this config "
                             f"({type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:160]})") from None
    return HFCausalLM(model, context)


def save_hf_folder(model: HFCausalLM, folder: Path, tokenizer_definition: str = "") -> None:
    """What ``AutoModelForCausalLM.from_pretrained(folder, local_files_only=True, use_safetensors=True)`` loads: config.json,
    model.safetensors, generation_config.json, and the text's tokenizer.json where it has one (a byte-level
    text's tokenizer is the identity on bytes and has none)."""
    transformers = _transformers()
    folder.mkdir(parents=True, exist_ok=True)
    with transformers_quiet():
        model.model.save_pretrained(folder, safe_serialization=True)
        transformers.GenerationConfig.from_model_config(model.model.config).save_pretrained(folder)
    if tokenizer_definition:
        (folder / "tokenizer.json").write_text(tokenizer_definition, encoding="utf-8")
        (folder / "tokenizer_config.json").write_text(json.dumps(
            {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": model.context}, indent=1) + "\n")


def reload_difference(folder: Path, model: HFCausalLM, ids: torch.Tensor) -> float:
    """max |Δ| between the logits of the model reloaded from ``folder`` and ``model``'s, on ``ids``: the proof
    that the folder is the trained model."""
    transformers = _transformers()
    with transformers_quiet():
        reloaded = transformers.AutoModelForCausalLM.from_pretrained(folder, local_files_only=True,
                                                                     use_safetensors=True).eval()
    model.eval()
    with torch.no_grad():
        return float((reloaded(input_ids=ids, use_cache=False).logits - model(ids)).abs().max())

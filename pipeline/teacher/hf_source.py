"""Where a language-model teacher comes from: a softcache checkpoint, or the user's own Hugging Face causal
LM saved in a local folder.

What may run is the ``transformers`` library's own code on the folder's data (the ``hf`` extra), and
nothing the folder brings: its weights load from safetensors only (a pickled ``pytorch_model.bin`` runs
code when loaded, so a folder that has only those is refused, saying how to convert it), never with
``trust_remote_code`` (a config that maps to code of its own, ``auto_map``, is refused), and never from
the network (``local_files_only``, with the hub switched offline): a name that is not a local folder is
refused in one line. The folder's ``tokenizer.json`` is its tokenizer (:mod:`pipeline.data.tokenizers`).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from torch import nn

from pipeline.errors import UsageError

__all__ = ["HFCausalLM", "load_hf_teacher", "load_lm_teacher", "is_hf_folder"]

_PICKLED = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl")


def is_hf_folder(path: str | Path) -> bool:
    return Path(path).is_dir() and (Path(path) / "config.json").is_file()


class HFCausalLM(nn.Module):
    """The loaded model as softcache's LMs look: int64 (B, L) ids -> float (B, L, V) logits, with
    ``vocab_size`` (its output width) and ``context`` (its longest window)."""

    def __init__(self, model: nn.Module, context: int):
        super().__init__()
        self.model, self.context = model, context
        self.vocab_size = int(model.get_output_embeddings().weight.shape[0])

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if ids.shape[1] > self.context:
            raise UsageError(f"a window of {ids.shape[1]} tokens is longer than the teacher's context of "
                             f"{self.context}; use CONTEXT={self.context} or less")
        return self.model(input_ids=ids).logits


def load_hf_teacher(spec: str | Path) -> tuple[HFCausalLM, dict]:
    """The model in eval mode, and a record: architecture, fingerprint (sha256 of the config and every
    safetensors file), folder."""
    folder = Path(spec)
    if not folder.is_dir():
        raise UsageError(f"TEACHER={spec} is not a local folder: softcache never downloads a model; save it with "
                         f"save_pretrained(folder) where the network is, and give that folder")
    if not (folder / "config.json").is_file():
        raise UsageError(f"{folder} holds no config.json, so it is no Hugging Face model folder")
    config = json.loads((folder / "config.json").read_text())
    if config.get("auto_map"):
        raise UsageError(f"{folder}: its config maps to code shipped with the model (auto_map), which softcache never "
                         f"runs (no trust_remote_code); use a model whose architecture transformers has itself")
    weights = sorted(folder.glob("*.safetensors"))
    if not weights:
        pickled = sorted(p.name for pattern in _PICKLED for p in folder.glob(pattern))
        raise UsageError(f"{folder} has no safetensors weights" + (f", only pickled ones ({', '.join(pickled)}), "
                         f"which run code when loaded" if pickled else "") + "; save it with "
                         "save_pretrained(folder, safe_serialization=True)")
    try:
        import transformers
    except ImportError:
        raise UsageError("a Hugging Face teacher needs transformers: pip install 'softcache[hf]'") from None
    os.environ.setdefault("HF_HUB_OFFLINE", "1")          # any hidden download fails loudly, never happens
    try:
        load = transformers.AutoModelForCausalLM.from_pretrained   # safetensors only, this folder only, no code
        model = load(folder, use_safetensors=True, local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError, KeyError) as exc:
        raise UsageError(f"{folder}: transformers cannot load it ({str(exc).splitlines()[0][:160]})") from None
    context = next((int(config[k]) for k in ("n_positions", "max_position_embeddings", "n_ctx") if k in config), 0)
    if context < 1:
        raise UsageError(f"{folder}: its config gives no context length (n_positions or max_position_embeddings)")
    digest = hashlib.sha256((folder / "config.json").read_bytes())
    for path in weights:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    record = {"arch": f"hf:{config.get('model_type', '?')}", "fingerprint": digest.hexdigest()[:16],
              "folder": str(folder)}
    return HFCausalLM(model.eval(), context).eval(), record


def load_lm_teacher(spec: str | Path) -> tuple[nn.Module, dict]:
    """An LM teacher in eval mode and its record (``arch``, ``fingerprint``, ``metrics``): a softcache
    checkpoint (``softcache lm-teacher``) or a local Hugging Face folder."""
    if Path(spec).is_dir():
        model, record = load_hf_teacher(spec)
        return model, {**record, "metrics": {}}
    from pipeline.training.checkpoint import load_checkpoint

    model, ckpt = load_checkpoint(Path(spec), "lm", fix="teacher")
    return model.eval(), ckpt


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
from pathlib import Path

import torch
from torch import nn

from pipeline.data.tokenizers import definition_fingerprint
from pipeline.errors import UsageError
from pipeline.models.hf_lm import HFCausalLM, hf_config_context, transformers_quiet

__all__ = ["HFCausalLM", "load_hf_teacher", "load_lm_teacher", "is_hf_folder"]

_PICKLED = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl")


def is_hf_folder(path: str | Path) -> bool:
    return Path(path).is_dir() and (Path(path) / "config.json").is_file()


def load_hf_teacher(spec: str | Path) -> tuple[HFCausalLM, dict]:
    """The model in eval mode, and a record: architecture, fingerprint (:func:`loaded_fingerprint`), folder
    and the fingerprint of the folder's tokenizer.json (None where it has none)."""
    folder = Path(spec)
    if not folder.is_dir():
        raise UsageError(f"TEACHER={spec} is not a local folder: softcache never downloads a model; save it with "
                         f"save_pretrained(folder) where the network is, and give that folder")
    if not (folder / "config.json").is_file():
        raise UsageError(f"{folder} holds no config.json, so it is no Hugging Face model folder")
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (ValueError, RecursionError, OSError) as exc:
        raise UsageError(f"{folder}/config.json is not a readable JSON config ({str(exc)[:80]}); save the model "
                         f"again with save_pretrained(folder)") from None
    if not isinstance(config, dict):
        raise UsageError(f"{folder}/config.json is not a config (a JSON object); save the model again")
    if config.get("auto_map"):
        raise UsageError(f"{folder}: its config maps to code shipped with the model (auto_map), which softcache never "
                         f"runs (no trust_remote_code); use a model whose architecture transformers has itself")
    weights = sorted(folder.rglob("*.safetensors"))
    if not weights:
        pickled = sorted(p.name for pattern in _PICKLED for p in folder.glob(pattern))
        raise UsageError(f"{folder} has no safetensors weights" + (f", only pickled ones ({', '.join(pickled)}), "
                         f"which run code when loaded" if pickled else "") + "; save it with "
                         "save_pretrained(folder, safe_serialization=True)")
    try:
        import transformers
    except ImportError:
        raise UsageError("a Hugging Face teacher needs transformers: pip install 'softcache[hf]'") from None
    if config.get("quantization_config"):
        raise UsageError(f"{folder}: its config asks for quantized weights (quantization_config), which load through "
                         f"code and libraries of their own; give the model's full-precision weights")
    context = hf_config_context(config)
    if not isinstance(context, int) or not 1 <= context <= 1 << 24:
        raise UsageError(f"{folder}: its config gives no context length from 1 to {1 << 24} (n_positions or "
                         f"max_position_embeddings), got {str(context)[:40]}")
    try:
        with transformers_quiet():     # offline, and no remarks or loading bars beside softcache's one line
            load = transformers.AutoModelForCausalLM.from_pretrained   # safetensors only, this folder only, no code
            model, info = load(folder, use_safetensors=True, local_files_only=True, trust_remote_code=False,
                               output_loading_info=True)
    except Exception as exc:     # transformers and safetensors raise many types for a malformed folder
        raise UsageError(f"{folder}: transformers cannot load it ({type(exc).__name__}: "
                         f"{(str(exc).splitlines() or [''])[0][:160]})") from None
    # A weight the files do not hold would be a fresh random draw on every load: two passes of one folder would
    # differ under one name. Refuse it; a mismatched or unexpected one means the files are not this config's.
    problems = {kind: sorted(info.get(kind) or []) for kind in ("missing_keys", "mismatched_keys", "unexpected_keys")}
    if any(problems.values()):
        kind, keys = next((k, v) for k, v in problems.items() if v)
        raise UsageError(f"{folder}: its weights do not match its config ({kind.replace('_', ' ')}: "
                         f"{', '.join(map(str, keys[:3]))}{' ...' if len(keys) > 3 else ''}); save the whole model "
                         f"with save_pretrained(folder)")
    tokenizer = folder / "tokenizer.json"
    record = {"arch": f"hf:{config.get('model_type', '?')}", "fingerprint": loaded_fingerprint(folder, model),
              "folder": str(folder.resolve()),
              "tokenizer_fingerprint": definition_fingerprint(tokenizer.read_text(encoding="utf-8", errors="replace"))
              if tokenizer.is_file() else None}
    return HFCausalLM(model.eval(), context).eval(), record


def loaded_fingerprint(folder: Path, model: nn.Module) -> str:
    """The teacher as loaded: its config and every tensor the model holds (name, dtype, shape, values), so
    shards in subfolders, weights overwritten in place and another folder of the same name are told apart by
    what runs, not by where it lies."""
    digest = hashlib.sha256((folder / "config.json").read_bytes())
    for name, tensor in sorted(model.state_dict().items()):
        value = tensor.detach().cpu().contiguous()
        digest.update(f"{name}\0{value.dtype}\0{tuple(value.shape)}\0".encode())
        digest.update(value.view(torch.uint8).numpy().tobytes() if value.numel() else b"")
    return digest.hexdigest()[:16]


def load_lm_teacher(spec: str | Path) -> tuple[nn.Module, dict]:
    """An LM teacher in eval mode and its record (``arch``, ``fingerprint``, ``metrics``): a softcache
    checkpoint (``softcache lm-teacher``) or a local Hugging Face folder."""
    if Path(spec).is_dir():
        model, record = load_hf_teacher(spec)
        return model, {**record, "metrics": {}}
    from pipeline.training.checkpoint import load_checkpoint

    model, ckpt = load_checkpoint(Path(spec), "lm", fix="teacher")
    return model.eval(), ckpt


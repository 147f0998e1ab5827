"""Whether a ``torch.export`` archive (``.pt2``) can be loaded without running code it carries.

``torch.export.load`` unpickles whatever the archive asks it to: weights and tensor constants
marked ``use_pickle`` go through ``torch.load(weights_only=False)``, custom and opaque objects
through ``pickle.loads``, legacy weight and constant files and sample inputs through a loader
that falls back to an unsafe load when the safe one fails, and AOTInductor entries are compiled
code. Unpickling runs arbitrary code, so the teacher pass reads the archive's own index first
(its JSON configs, and the sample inputs with ``torch.load(weights_only=True)``, which runs
nothing) and loads only an archive that needs none of these: what ``torch.export.save`` writes
for an ordinary model of plain tensors.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import torch

__all__ = ["unsafe_entries"]

# Entries that are compiled code or weights kept outside the program (torch.export.pt2_archive.constants).
_CODE_DIRS = ("data/aotinductor/", "data/executorch/", "data/mtia", "xl_model_weights/")
_TENSOR_CONSTANT = "tensor_"
_MAX_CONFIG_BYTES = 64 << 20      # an index larger than this is not one torch.export.save wrote


def _config(archive: zipfile.ZipFile, name: str | None) -> dict:
    if name is None:
        return {}
    if archive.getinfo(name).file_size > _MAX_CONFIG_BYTES:
        raise ValueError(f"{name} is implausibly large")
    config = json.loads(archive.read(name)).get("config", {})
    if not isinstance(config, dict):
        raise ValueError(f"{name} is malformed")
    return config


def unsafe_entries(path: Path) -> list[str]:
    """What in the archive at ``path`` would make ``torch.export.load`` unpickle or run code, in words
    (empty: it loads as data). An archive whose index cannot be read counts as unsafe."""
    with zipfile.ZipFile(path) as archive:
        # torch writes every entry under one root folder, whose name varies; what follows it is the layout.
        entries = {name.split("/", 1)[1]: name for name in archive.namelist() if "/" in name}
        found = [f"compiled code or outside weights ({rel})" for rel in entries if rel.startswith(_CODE_DIRS)]
        models = [rel[len("models/"):-len(".json")] for rel in entries
                  if rel.startswith("models/") and rel.endswith(".json")]
        for model in models:
            for legacy, what in ((f"data/weights/{model}.pt", "pickled weights"),
                                 (f"data/constants/{model}.pt", "pickled constants")):
                if legacy in entries:
                    found.append(f"{what} ({legacy})")
            try:
                weights = _config(archive, entries.get(f"data/weights/{model}_weights_config.json"))
                constants = _config(archive, entries.get(f"data/constants/{model}_constants_config.json"))
            except (ValueError, KeyError, UnicodeDecodeError, AttributeError) as exc:
                found.append(f"an unreadable index ({exc})")
                continue
            found += [f"pickled weight {fqn}" for fqn, meta in weights.items()
                      if not isinstance(meta, dict) or meta.get("use_pickle") is not False]
            found += [f"pickled or opaque constant {fqn}" for fqn, meta in constants.items()
                      if not isinstance(meta, dict) or meta.get("use_pickle") is not False
                      or not str(meta.get("path_name", "")).startswith(_TENSOR_CONSTANT)]
            sample = entries.get(f"data/sample_inputs/{model}.pt")
            if sample is not None:
                try:     # the safe loader torch tries first; where it fails, torch falls back to unpickling
                    torch.load(io.BytesIO(archive.read(sample)), weights_only=True)
                except Exception:
                    found.append(f"sample inputs that need an unsafe load ({sample.split('/', 1)[1]})")
        if not models:
            found.append("no exported program (models/*.json)")
    return found

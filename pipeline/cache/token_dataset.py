"""Deprecated path, kept for one release: the per-token dataset for your own loop is now
``pipeline.cache.lm_dataset.TokenTargetDataset`` (the text side's modules are all ``lm_*``)."""

import warnings

from pipeline.cache.lm_dataset import TokenTargetDataset

__all__ = ["TokenTargetDataset"]

warnings.warn("'pipeline.cache.token_dataset' is deprecated and goes in the next release; use "
              "'from pipeline.cache.lm_dataset import TokenTargetDataset'", DeprecationWarning, stacklevel=2)

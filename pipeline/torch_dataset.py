"""Deprecated path, kept for one release: the dataset for your own loop is now
``pipeline.cache.soft_targets.SoftTargetDataset``."""

import warnings

from pipeline.cache.soft_targets import SoftTargetDataset

__all__ = ["SoftTargetDataset"]

warnings.warn("'pipeline.torch_dataset' is deprecated and goes in the next release; use "
              "'from pipeline.cache.soft_targets import SoftTargetDataset'", DeprecationWarning, stacklevel=2)

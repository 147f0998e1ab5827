"""Deprecated path, kept for one release: every model, text ones included, is now built by
``pipeline.models`` (``create_lm``)."""

import warnings

from pipeline.models import create_lm, list_lms
from pipeline.models.lm import CausalLM, register_lm

__all__ = ["CausalLM", "create_lm", "list_lms", "register_lm"]

warnings.warn("'pipeline.models_lm' is deprecated and goes in the next release; use "
              "'from pipeline.models import create_lm'", DeprecationWarning, stacklevel=2)

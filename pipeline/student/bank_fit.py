"""How well a student that replayed K cached views fits its teacher on those views, and on views it never saw.

Beyer et al. (2022) warn that precomputed targets overfit when the bank is small: a student
that only ever sees K fixed views of each image can learn those K views instead of the
teacher's function. A cache that holds more views than a run replayed measures this without
the teacher: views K..V-1 of every image were drawn, mixed and scored exactly as the first
K were, but the student never trained on them. The difference between the two fits is the
student's overfitting to its bank; as K grows it should shrink towards zero.

Each training row the run trained on is scored once on one of its bank views and once on
one of its fresh views (both drawn from the run's seed), so the two halves compare the same
images, and nothing but the view differs. Three numbers per half, at temperature 1:

    agreement   the student's top-1 equals the teacher's top-1 on that view (function matching's accuracy)
    accuracy    the student's top-1 equals the label of the view's dominant image (mixup weight >= 1/2)
    kl          mean KL(teacher || student) in nats, the quantity function matching minimises
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.augment import render_views
from pipeline.cache.reader import LogitCache
from pipeline.training.loop import CPU_INFERENCE_BATCH, to_unit_float

__all__ = ["bank_fit"]


@torch.no_grad()
def _fit(model: torch.nn.Module, images, cache: LogitCache, params: torch.Tensor, mix, rows: torch.Tensor,
         view: torch.Tensor, labels: torch.Tensor, pad: int, batch_size: int) -> dict:
    """agreement, accuracy and kl of ``model`` on view ``view[i]`` of training row ``rows[i]``; ``params`` (N, V, 3)
    and ``mix`` (partners and weights, or None) of every cached view."""
    agree = correct = 0
    kl = torch.zeros((), dtype=torch.float64)
    for lo in range(0, len(rows), batch_size):
        r, v = rows[lo:lo + batch_size], view[lo:lo + batch_size]
        pair = (None, None) if mix is None else (mix[0][r, v], mix[1][r, v])
        x = render_views(images, r, params[r, v], pad, *pair)
        student = F.log_softmax(model(to_unit_float(x)).float(), dim=-1)
        teacher = cache.batch_view_log_soft_targets(r, v, 1.0)
        kl += F.kl_div(student, teacher, reduction="sum", log_target=True).double()
        agree += int((student.argmax(1) == teacher.argmax(1)).sum())
        correct += int((student.argmax(1) == labels[r]).sum())
    n = max(len(rows), 1)
    return {"agreement": agree / n, "accuracy": correct / n, "kl": float(kl) / n}


def bank_fit(model: torch.nn.Module, images, cache: LogitCache, rows: torch.Tensor, labels: torch.Tensor, k: int,
             *, seed: int, pad: int, batch_size: int = CPU_INFERENCE_BATCH) -> dict:
    """The fit of a run that replayed the first ``k`` cached views, on those (``bank``) and on the cache's
    other views (``fresh``; None when the run replayed them all), over its training ``rows`` (B,) int64.
    ``images``: the training images as the run indexed them (a uint8 tensor or on-disk rows)."""
    model.eval()
    views = (images, cache, cache.view_params(), cache.view_mix(cache.views))   # every view, fresh ones included
    rng = np.random.default_rng([seed, 0x62616E6B])    # "bank": its own stream, the run's weights untouched
    n = len(rows)
    bank = torch.from_numpy(rng.integers(0, k, n))
    fit = {"bank_views": k, "fresh_views": cache.views - k, "rows": n,
           "bank": _fit(model, *views, rows, bank, labels, pad, batch_size), "fresh": None}
    if cache.views > k:
        fresh = torch.from_numpy(rng.integers(k, cache.views, n))
        fit["fresh"] = _fit(model, *views, rows, fresh, labels, pad, batch_size)
    return fit

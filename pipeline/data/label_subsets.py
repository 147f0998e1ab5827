"""Few labels: which training rows keep their hard label when only N of them are labelled.

The labelled rows are a class-balanced subset (N // C rows of each class, the remainder
spread over classes picked at random), drawn from the run's seed with a stream of its
own, so a scratch run and a distilled run with the same seed and N see the very same
labelled rows, and a seed sweep also varies the subset. Every other training row is
unlabelled for the run: a distilled student gets only the soft term there, and a scratch
student never sees it.
"""

from __future__ import annotations

import hashlib

import numpy as np

from pipeline.errors import UsageError

__all__ = ["labelled_rows", "rows_digest", "labels_record"]


def labelled_rows(y: np.ndarray, rows: np.ndarray, n: int, seed: int, num_classes: int) -> np.ndarray:
    """The N labelled dataset rows (sorted int64) among ``rows`` (the rows a run trains on),
    balanced over ``num_classes`` classes by their labels ``y``. Refused in one line when N is more
    than the rows, or some class has too few rows for its share."""
    if n > len(rows):
        raise UsageError(f"LABELS={n} but the run trains on {len(rows)} rows; give LABELS <= {len(rows)} or all")
    rng = np.random.default_rng([seed, 0x6C6162])           # "lab": its own stream, apart from the run's
    share = np.full(num_classes, n // num_classes)
    share[rng.permutation(num_classes)[:n % num_classes]] += 1
    chosen = []
    for c in range(num_classes):
        of_class = rows[y[rows] == c]
        if len(of_class) < share[c]:
            raise UsageError(f"LABELS={n} needs {share[c]} rows of class {c} for a balanced subset, but the "
                             f"training rows hold {len(of_class)}; give a smaller LABELS")
        chosen.append(rng.choice(of_class, size=share[c], replace=False))
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def rows_digest(rows: np.ndarray) -> str:
    """A short digest of a set of rows, recorded in the run so two runs can be seen to share a subset."""
    return hashlib.sha256(np.sort(rows).astype("<i8").tobytes()).hexdigest()[:16]


def labels_record(labels: int | None, rows: np.ndarray, y: np.ndarray, num_classes: int) -> dict:
    """What a run's metrics say of its labels: None (every row labelled), or N with the labelled rows'
    digest and their count per class."""
    if labels is None:
        return {"labels": None}
    return {"labels": len(rows), "labelled_rows_digest": rows_digest(rows),
            "labels_per_class": np.bincount(y[rows], minlength=num_classes).tolist()}

"""The n-gram yardstick the LM teacher is measured against: a distribution at every context (it sums to one
over the vocabulary), and it learns what counting can learn."""

import numpy as np
import pytest

from pipeline.teacher.ngram import NGramModel


@pytest.mark.parametrize("order", [1, 3, 5])
def test_each_context_gives_a_distribution(order):
    rng = np.random.default_rng(0)
    train = rng.integers(0, 6, size=3000)
    model = NGramModel(train, order, 6)
    stream = rng.integers(0, 6, size=40)
    for i in (0, 2, 17, 39):                      # every next token after the same context, at position i
        options = np.repeat(stream[None, : i + 1], 6, axis=0)
        options[:, i] = np.arange(6)
        total = sum(model.probabilities(row)[i] for row in options)
        assert total == pytest.approx(1.0, abs=1e-9)


def test_counting_learns_a_pattern_and_a_longer_context_learns_more():
    pattern = np.array([0, 1, 2, 0, 1, 3] * 400)                  # after "0 1", 2 and 3 alternate
    held_out = pattern[:600]
    bits = {order: -np.log2(NGramModel(pattern, order, 4).probabilities(held_out)[8:]).mean() for order in (1, 3, 4)}
    assert bits[1] > 1.5 and bits[3] == pytest.approx(1 / 3, abs=0.05) and bits[4] < 0.05

"""The per-token cache: exact at every grid temperature (the support's probabilities and the tail mass
equal the dense teacher's, within the storage dtype's rounding, even when the support holds more than
0.9999 of the mass), small (bytes per position at k = 16 against dense fp32), refused off its grid, and
every kind of edit caught by the reader."""

import h5py
import numpy as np
import pytest
import torch

from pipeline.cache.lm_format import (
    grid_index,
    target_log_probs,
    targets_are_finite,
    token_bytes_per_position,
    token_targets,
    top_entries,
    write_token_cache,
)
from pipeline.cache.lm_reader import TokenCache
from pipeline.errors import UsageError

GRID = (1.0, 2.0, 4.0)


def random_logits(vocab, windows=3, context=8, seed=0):
    """Teacher-like logits: a few strong tokens, and some rows so peaked the top-16 hold > 0.9999."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(windows, context, vocab, generator=g, dtype=torch.float64) * 2
    z[..., :4] += 6
    z[0, :4, :16] += 30                                         # > 0.9999 of the mass in 16 tokens
    return z


@pytest.mark.parametrize("vocab", [256, 32768])
@pytest.mark.parametrize("dtype,tol", [("float32", 1e-5), ("float16", 2e-3)])   # about 2^-9: float16's steps
def test_every_grid_temperature_reads_the_dense_softmax_and_the_exact_tail(vocab, dtype, tol):
    z = random_logits(vocab)
    stored = {k: (v.astype(dtype) if k == "topk_logits" else v)
              for k, v in token_targets(z.float(), 16, GRID).items()}
    for T in GRID:
        ids, support, tail = target_log_probs(stored, T, GRID)
        dense = torch.log_softmax(z / T, dim=-1)                           # float64 reference
        want = dense.gather(-1, ids)
        assert ((support.double() - want).abs() <= tol * (1 + want.abs())).all()     # relative to the size
        truth = torch.logsumexp(dense.scatter(-1, ids, float("-inf")), dim=-1)   # log tail mass, from every logit
        assert torch.allclose(tail.double(), truth, atol=1e-4, rtol=0)
        total = torch.logsumexp(torch.cat([support.double(), tail.double()[..., None]], -1), -1)
        assert torch.allclose(total, torch.zeros_like(total), atol=tol)
    peaked = torch.logsumexp(torch.log_softmax(z[0, :4], -1).gather(-1, z[0, :4].topk(16).indices), -1).exp()
    assert (peaked > 0.9999).all()


def test_the_even_spread_of_the_old_image_rule_is_not_what_this_reads():
    z = random_logits(256)
    ids, _, tail = target_log_probs(token_targets(z.float(), 16, GRID), 2.0, GRID)
    truth = torch.logsumexp(torch.log_softmax(z / 2, -1).scatter(-1, ids, float("-inf")), -1).exp()
    kept = z.gather(-1, ids)
    rest = torch.logsumexp(z.scatter(-1, ids, float("-inf")), -1)          # the tail at T = 1, spread evenly
    even = torch.cat([kept, (rest - np.log(256 - 16))[..., None].expand(*rest.shape, 240)], -1)
    spread = torch.logsumexp(torch.log_softmax(even / 2, -1)[..., 16:], -1).exp()
    assert (tail.exp() - truth).abs().max() < 1e-5 < (spread - truth).abs().mean()


def test_storage_at_k16_fp16_against_dense_fp32():
    assert token_bytes_per_position(256, 16, "float16", 3) / (256 * 4) <= 0.07
    assert token_bytes_per_position(32768, 16, "float16", 3) / (32768 * 4) <= 0.001


def test_a_temperature_off_the_grid_is_refused_naming_the_grid():
    with pytest.raises(UsageError, match=r"T=3 is not in the cache's temperature grid \(1, 2, 4\)"):
        grid_index(GRID, 3.0)
    assert grid_index(GRID, 4.0) == 2


def _write(path, vocab=256, topk=16, dtype="float16", windows=None):
    windows = windows or {"train": 5, "val": 2, "test": 2}
    blocks = {s: random_logits(vocab, n, 8, seed=i).float() for i, (s, n) in enumerate(windows.items())}
    with write_token_cache(path, windows=windows, context=8, vocab_size=vocab, topk=topk, dtype=dtype,
                           temperatures=GRID, attrs={"text_fingerprint": "t" * 16,
                                                     "teacher_fingerprint": "m" * 16}) as w:
        for split, z in blocks.items():
            w.write(split, token_targets(z, topk, GRID))
    return blocks


def test_a_written_cache_reads_back_what_was_stored(tmp_path):
    blocks = _write(tmp_path / "c.h5")
    cache = TokenCache(tmp_path / "c.h5", {"text_fingerprint": "t" * 16})
    ids, support, tail = cache.targets("train", [3, 0], 2.0)
    want_ids, want_support, want_tail = target_log_probs(
        {k: (v.astype(np.float16) if k == "topk_logits" else v)
         for k, v in token_targets(blocks["train"][[3, 0]], 16, GRID).items()}, 2.0, GRID)
    assert torch.equal(ids, want_ids) and torch.allclose(support, want_support) and torch.allclose(tail, want_tail)
    with pytest.raises(UsageError, match="was made for another text_fingerprint"):
        TokenCache(tmp_path / "c.h5", {"text_fingerprint": "x" * 16})
    dense = tmp_path / "dense.h5"
    _write(dense, topk=0, dtype="float32")
    _, logp, _ = TokenCache(dense).targets("val", [1], 3.0)          # dense: any temperature
    assert torch.allclose(logp, torch.log_softmax(random_logits(256, 2, 8, seed=1)[[1]].float() / 3, -1), atol=1e-6)


def _reverse_columns(f):
    f["train/topk_logits"][0] = f["train/topk_logits"][0][..., ::-1]


def _scale_row(f):
    f["train/topk_logits"][1] = f["train/topk_logits"][1] * np.float16(1.5)


def _shuffle_windows(f):
    values = f["train/topk_logits"][:]
    f["train/topk_logits"][:] = values[[1, 0, 2, 3, 4]]


def _swap_ids(f):
    ids = f["train/topk_ids"][:]
    ids[..., [0, 1]] = ids[..., [1, 0]]
    f["train/topk_ids"][:] = ids


def _another_teachers_values(f):
    other = token_targets(random_logits(256, 5, 8, seed=99).float(), 16, GRID)
    for name, values in other.items():
        f["train"][name][:] = values.astype(f["train"][name].dtype)


def _not_complete(f):
    f.attrs["complete"] = 1      # true, but not exactly True


@pytest.mark.parametrize("edit,match", [(_reverse_columns, "out of order"), (_scale_row, "differ from the digest"),
                                        (_shuffle_windows, "differ from the digest"),
                                        (_swap_ids, "differ from the digest"),
                                        (_another_teachers_values, "differ from the digest"),
                                        (_not_complete, "not marked complete")])
def test_every_kind_of_edit_is_caught(tmp_path, edit, match):
    _write(tmp_path / "c.h5")
    with h5py.File(tmp_path / "c.h5", "r+") as f:
        edit(f)
    with pytest.raises(UsageError, match=match):
        TokenCache(tmp_path / "c.h5")


def test_windows_asked_twice_or_out_of_order_read_their_own_targets(tmp_path):
    _write(tmp_path / "c.h5")
    cache = TokenCache(tmp_path / "c.h5")
    ids, support, tail = cache.targets("train", [4, 1, 4], 1.0)
    one = [cache.targets("train", [i], 1.0) for i in (4, 1)]
    assert torch.equal(ids[0], one[0][0][0]) and torch.equal(ids[2], ids[0]) and torch.equal(ids[1], one[1][0][0])
    assert torch.equal(support[1], one[1][1][0]) and torch.equal(tail[2], one[0][2][0])


@pytest.mark.parametrize("vocab", [32768, 10007])                  # a whole number of blocks, and a shorter last one
def test_the_two_step_top_k_finds_torch_topks_values(vocab):
    g = torch.Generator().manual_seed(1)
    rows = torch.randn(6, vocab, generator=g)
    rows[1] = rows[1].round()                                       # many ties
    rows[2, 100:117] += 50                                          # the top 17 in one or two blocks
    rows[3, -3:] += 50                                              # the top 3 in the shorter last block
    rows[4, ::64] += 20                                             # one large entry in every block
    values, ids = top_entries(rows, 17)
    want = rows.topk(17, dim=-1).values
    assert torch.equal(values, want) and torch.equal(rows.gather(-1, ids), values)
    assert all(len(set(r.tolist())) == 17 for r in ids)             # 17 distinct columns per row


@pytest.mark.parametrize("topk", [16, 0])
def test_a_nan_or_inf_anywhere_is_seen_and_minus_inf_is_a_zero_probability(topk):
    z = random_logits(32768).float()
    assert targets_are_finite(token_targets(z, topk, GRID))
    for bad in (float("nan"), float("inf")):
        broken = z.clone()
        broken[1, 2, 30000] = bad                                   # deep in one row's tail
        assert not targets_are_finite(token_targets(broken, topk, GRID))
    if topk:
        masked = z.clone()
        masked[..., 100:200] = float("-inf")                       # a hundred tokens the teacher rules out
        stored = token_targets(masked, topk, GRID)
        assert targets_are_finite(stored)
        ids, _, tail = target_log_probs(stored, 2.0, GRID)
        truth = torch.logsumexp(torch.log_softmax(masked.double() / 2, -1).scatter(-1, ids, float("-inf")), -1)
        assert torch.allclose(tail.double(), truth, atol=1e-5)

import h5py
import numpy as np
import pytest
import torch

from pipeline.cache.format import write_cache
from pipeline.cache.reader import CacheExpectations, LogitCache
from pipeline.config import LogitsConfig
from pipeline.errors import UsageError
from pipeline.teacher.logits_pass import write_teacher_logits

ATTRS = {"teacher_fingerprint": "t" * 16, "dataset_fingerprint": "d" * 16}


def make_cache(path, n=50, c=4, temperature=1.0, logits=None, labels=None, index=None, complete=True,
               dtype="float32", seed=0):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, c)).astype(np.float32) * 3 if logits is None else logits
    y = rng.integers(0, c, n) if labels is None else labels
    idx = np.arange(n) if index is None else index
    with write_cache(path, rows={"train": n, "test": n}, num_classes=c, temperature=temperature,
                     attrs=ATTRS, dtype=dtype) as w:
        for split in ("train", "test"):
            w.write(split, 0, z / temperature, y, idx)
    if not complete:
        with h5py.File(path, "r+") as f:
            f.attrs["complete"] = False
    return z, y


def test_round_trip(tmp_path):
    z, y = make_cache(tmp_path / "c.h5")
    c = LogitCache(tmp_path / "c.h5", CacheExpectations("d" * 16, "t" * 16, 4, 50))
    assert torch.allclose(c.logits(), torch.from_numpy(z))
    np.testing.assert_array_equal(c.labels(), y)
    assert torch.allclose(c.soft_targets(2.0).sum(1), torch.ones(50))
    assert c.teacher_accuracy() == pytest.approx(float((z.argmax(1) == y).mean()))


@pytest.mark.parametrize("T", [1.0, 2.0, 4.0, 8.0])
def test_any_temperature_from_one_cache(tmp_path, T):
    z, _ = make_cache(tmp_path / "t1.h5", temperature=1.0)
    make_cache(tmp_path / "t4.h5", temperature=4.0, logits=z)
    a, b = LogitCache(tmp_path / "t1.h5"), LogitCache(tmp_path / "t4.h5")
    assert torch.allclose(a.soft_targets(T), b.soft_targets(T), atol=1e-6)
    assert torch.allclose(a.soft_targets(T), torch.softmax(torch.from_numpy(z) / T, 1), atol=1e-6)


def test_float16_storage_is_read_the_same_way(tmp_path):
    z, _ = make_cache(tmp_path / "h.h5", dtype="float16")
    assert h5py.File(tmp_path / "h.h5")["train/logits"].dtype == np.float16
    assert torch.allclose(LogitCache(tmp_path / "h.h5").logits(), torch.from_numpy(z), atol=1e-2)


def test_failed_writer_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with write_cache(tmp_path / "c.h5", rows={"train": 10}, num_classes=3, temperature=1.0, attrs={}) as w:
            w.write("train", 0, np.zeros((5, 3)), np.zeros(5, int), np.arange(5))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("case,match", [
    ("missing", "missing"),
    ("incomplete", "not marked complete"),
    ("truncated", "unreadable or corrupt"),
    ("flipped", "unreadable or corrupt"),
    ("nan", "NaN or Inf"),
    ("labels", r"outside \[0, 4\)"),
    ("order", "not in dataset order"),
    ("dataset", "different dataset"),
    ("teacher", "different teacher"),
    ("classes", "number of classes"),
    ("rows", "number of training rows"),
])
@pytest.mark.parametrize("stream", [False, True])
def test_every_defect_is_caught_and_names_the_fix(tmp_path, case, match, stream):
    path = tmp_path / "c.h5"
    expect = CacheExpectations()
    if case != "missing":
        z = np.random.default_rng(0).normal(size=(50, 4)).astype(np.float32)
        kwargs = {}
        if case == "nan":
            z[3, 1] = np.nan
        if case == "labels":
            kwargs["labels"] = np.full(50, 4)
        if case == "order":
            kwargs["index"] = np.arange(50)[::-1].copy()
        make_cache(path, logits=z, complete=case != "incomplete", **kwargs)
    if case == "truncated":
        path.write_bytes(path.read_bytes()[:2000])
    if case == "flipped":
        with h5py.File(path, "r") as f:
            offset = f["train/logits"].id.get_chunk_info(0).byte_offset
        raw = bytearray(path.read_bytes())
        raw[offset + 17] ^= 0xFF
        path.write_bytes(bytes(raw))
    expect = {
        "dataset": CacheExpectations(dataset_fingerprint="x" * 16),
        "teacher": CacheExpectations(teacher_fingerprint="x" * 16),
        "classes": CacheExpectations(num_classes=10),
        "rows": CacheExpectations(train_rows=60),
    }.get(case, expect)
    with pytest.raises(UsageError, match=match) as info:
        LogitCache(path, expect, memory_limit_bytes=0 if stream else 1 << 30, block_bytes=16 * 4 * 4)
    assert "call pipeline.teacher.logits_pass.write_teacher_logits(LogitsConfig(...))" in str(info.value)


def test_teacher_pass_writes_a_verified_cache(cache_file, tiny_dataset, teacher_dir):
    import json
    record = json.loads((teacher_dir / "teacher.json").read_text())
    c = LogitCache(cache_file, CacheExpectations(tiny_dataset.fingerprint, record["fingerprint"], 3, 96))
    np.testing.assert_array_equal(c.labels("test"), tiny_dataset.y_test)
    assert c.teacher_accuracy("test") == pytest.approx(record["test_acc"])
    assert c.attrs["complete"] is True and c.attrs["teacher"] == "cnn"


def test_teacher_temperature_scales_what_is_stored(tmp_path, prepared, teacher_dir, cache_file):
    hot = tmp_path / "hot.h5"
    write_teacher_logits(LogitsConfig(teacher=teacher_dir / "teacher.pt", dataset=prepared, out=hot,
                                      temperature=4.0, device="cpu"))
    with h5py.File(cache_file) as f1, h5py.File(hot) as f4:
        np.testing.assert_allclose(f4["train/logits"][()] * 4.0, f1["train/logits"][()], rtol=1e-5, atol=1e-5)
    assert torch.allclose(LogitCache(hot).soft_targets(2.0), LogitCache(cache_file).soft_targets(2.0), atol=1e-6)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_topk_keeps_the_top_exactly_and_the_tail_mass(tmp_path, dtype):
    rng = np.random.default_rng(3)
    z = rng.normal(size=(40, 12)).astype(np.float32) * 2
    make_cache(tmp_path / "full.h5", c=12, n=40, logits=z)
    with write_cache(tmp_path / "top.h5", rows={"train": 40, "test": 40}, num_classes=12, temperature=1.0,
                     attrs=ATTRS, dtype=dtype, topk=3) as w:
        for split in ("train", "test"):
            w.write(split, 0, z, rng.integers(0, 12, 40), np.arange(40))
    full, top = LogitCache(tmp_path / "full.h5"), LogitCache(tmp_path / "top.h5")
    p_full, p_top = full.soft_targets(1.0), top.soft_targets(1.0)
    tol = 1e-5 if dtype == "float32" else 5e-3
    order = torch.argsort(p_full, dim=1, descending=True)[:, :3]
    assert torch.allclose(p_top.gather(1, order), p_full.gather(1, order), atol=tol)
    assert torch.allclose(p_top.sum(1), torch.ones(40), atol=1e-5)
    assert torch.equal(top.logits("test").argmax(1), full.logits("test").argmax(1))
    assert top.attrs["storage"] == "topk" and top.attrs["topk"] == 3


def test_topk_must_be_below_the_class_count(tmp_path):
    with pytest.raises(UsageError, match="CACHE_TOPK"):
        with write_cache(tmp_path / "c.h5", rows={"train": 1}, num_classes=4, temperature=1.0, attrs={}, topk=4):
            pass


def test_an_empty_split_is_allowed(tmp_path):
    with write_cache(tmp_path / "c.h5", rows={"train": 3, "test": 0}, num_classes=2, temperature=1.0,
                     attrs=ATTRS) as w:
        w.write("train", 0, np.zeros((3, 2), np.float32), np.array([0, 1, 0]), np.arange(3))
    assert LogitCache(tmp_path / "c.h5").train_rows == 3


@pytest.mark.parametrize("topk", [0, 3])
def test_streaming_reads_the_same_targets_as_memory(tmp_path, topk):
    rng = np.random.default_rng(4)
    z = rng.normal(size=(300, 8)).astype(np.float32)
    with write_cache(tmp_path / "c.h5", rows={"train": 300, "test": 50}, num_classes=8, temperature=2.0,
                     attrs=ATTRS, topk=topk) as w:
        w.write("train", 0, z / 2.0, rng.integers(0, 8, 300), np.arange(300))
        w.write("test", 0, z[:50] / 2.0, rng.integers(0, 8, 50), np.arange(50))
    memory = LogitCache(tmp_path / "c.h5")
    stream = LogitCache(tmp_path / "c.h5", memory_limit_bytes=0, block_bytes=64 * 8 * 4)
    assert memory.in_memory and not stream.in_memory
    assert memory.fingerprint == stream.fingerprint
    idx = torch.randperm(300, generator=torch.Generator().manual_seed(0))[:40]
    for T in (1.0, 4.0):
        assert torch.allclose(stream.batch_log_soft_targets(idx, T), memory.batch_log_soft_targets(idx, T), atol=1e-6)
    assert stream.teacher_accuracy("test") == memory.teacher_accuracy("test")


def _targets_in_child(cache, idx, queue):
    torch.set_num_threads(1)        # as DataLoader workers do: OpenMP pools do not survive fork
    queue.put(cache.batch_log_soft_targets(idx, 4.0).numpy())


def test_streaming_reader_is_safe_across_fork(tmp_path):
    import multiprocessing as mp
    make_cache(tmp_path / "c.h5", n=200)
    cache = LogitCache(tmp_path / "c.h5", memory_limit_bytes=0)
    idx = torch.arange(50, 10, -1)
    here = cache.batch_log_soft_targets(idx, 4.0)          # parent opens its handle first
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_targets_in_child, args=(cache, idx, queue))
    child.start()
    try:
        there = queue.get(timeout=60)
    finally:
        child.join(timeout=10)
        if child.is_alive():
            child.kill()
    assert child.exitcode == 0 and np.allclose(there, here.numpy())


def test_class_names_of_any_number_fit_and_are_covered_by_the_digest(tmp_path):
    """5,000 names outgrow HDF5's 64 KB attribute limit: they are a dataset, read back whole, and an
    edited name is refused like any edited attribute."""
    c, path = 5000, tmp_path / "many.h5"
    names = [f"class number {i}" for i in range(c)]
    z = np.random.default_rng(0).normal(size=(8, c)).astype(np.float32)
    with write_cache(path, rows={"train": 8, "test": 8}, num_classes=c, temperature=1.0,
                     attrs={**ATTRS, "class_names": names}) as w:
        for split in ("train", "test"):
            w.write(split, 0, z, np.arange(8) % c, np.arange(8))
    cache = LogitCache(path)
    assert cache.attrs["class_names"] == names
    with h5py.File(path, "r+") as f:
        assert "class_names" not in f.attrs and f["class_names"].shape == (c,)
        f["class_names"][3] = "renamed"
    with pytest.raises(UsageError, match="attributes differ from the digest"):
        LogitCache(path)


@pytest.mark.parametrize("in_memory", [True, False])
def test_a_top_k_cache_with_a_grid_reads_every_grid_temperature_exactly(tmp_path, in_memory):
    """Format 3: on the support the dense teacher's softmax(z/T), and the tail's exact total, at every T of
    the grid (the stored temperature is 2 here), where the old even spread is exact at the stored T only.
    A T off the grid is refused naming it; a top-k cache without a grid reads as it always did."""
    rng = np.random.default_rng(5)
    c, k, grid = 64, 4, (1.0, 2.0, 4.0)
    z = (rng.standard_cauchy(size=(40, c)) * 3).astype(np.float32)      # heavy tails: the spread is far off
    for name, temperatures in (("grid.h5", grid), ("old.h5", ())):
        with write_cache(tmp_path / name, rows={"train": 40, "test": 40}, num_classes=c, temperature=2.0,
                         attrs=ATTRS, topk=k, temperatures=temperatures) as w:
            for split in ("train", "test"):
                w.write(split, 0, z / 2.0, rng.integers(0, c, 40), np.arange(40))
    limit = (1 << 30) if in_memory else 0
    cache, old = (LogitCache(tmp_path / n, memory_limit_bytes=limit) for n in ("grid.h5", "old.h5"))
    assert cache.attrs["format_version"] == 3 and cache.grid == grid and old.grid == ()
    zt = torch.from_numpy(z)
    support = torch.topk(zt, k, dim=1).indices
    tail_of = lambda p: 1 - p.gather(1, support).sum(1)            # noqa: E731
    errors = []
    for T in grid:
        want = torch.softmax(zt / T, dim=1)
        got = cache.batch_log_soft_targets(torch.arange(40), T).exp()
        assert torch.allclose(got.gather(1, support), want.gather(1, support), atol=1e-5, rtol=1e-4)
        assert torch.allclose(tail_of(got), tail_of(want), atol=1e-5, rtol=1e-4)
        assert torch.allclose(cache.soft_targets(T), got, atol=1e-6)
        errors.append((tail_of(old.soft_targets(T)) - tail_of(want)).abs().max().item())
    assert errors[1] < 1e-5 and errors[0] > 1e-3 and errors[2] > 1e-3      # the even spread: exact at T=2 only
    with pytest.raises(UsageError, match=r"T=3 is not in the cache's temperature grid \(1, 2, 4\)"):
        cache.batch_log_soft_targets(torch.arange(4), 3.0)
    assert old.batch_log_soft_targets(torch.arange(4), 3.0).shape == (4, c)

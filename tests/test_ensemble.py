"""Teachers worth learning from: mixup view banks, ensembles, published caches, KL only."""

import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pipeline.augment import ReplayedViews, draw_view_mix, mix_views, render_views
from pipeline.cache.ensemble import (
    check_recorded_accuracy,
    publish_cache,
    write_ensemble,
)
from pipeline.cache.format import VIEW_SPLIT, seal
from pipeline.cache.reader import LogitCache
from pipeline.config import (
    EnsembleConfig,
    LogitsConfig,
    PublishConfig,
    StudentConfig,
    TeacherConfig,
)
from pipeline.errors import UsageError
from pipeline.losses import kd_loss_from_log_targets
from pipeline.results.report import render_markdown, summarize
from pipeline.student.distill import train_student
from pipeline.teacher.fit import train_teacher
from pipeline.teacher.logits_pass import write_teacher_logits
from pipeline.teacher.source import load_teacher
from pipeline.training.loop import predict

K = 3


def _cache(tmp_path, prepared, teacher: Path, name: str, **kw) -> Path:
    out = tmp_path / "cache" / f"{name}.h5"
    write_teacher_logits(LogitsConfig(teacher=teacher / "teacher.pt", dataset=prepared, out=out, device="cpu",
                                      chunk_rows=50, **kw))
    return out


@pytest.fixture
def mixup_cache(tmp_path, prepared, teacher_dir) -> Path:
    return _cache(tmp_path, prepared, teacher_dir, "tiny-v3-mx1", views=K, view_seed=7, mixup=1.0)


@pytest.fixture
def members(tmp_path, prepared, teacher_dir) -> list[tuple[Path, Path]]:
    """Three teachers (seeds 0, 1, 2) and their caches with mixup views: (cache, teacher.json) each."""
    out = [(_cache(tmp_path, prepared, teacher_dir, "m0", views=K, mixup=1.0), teacher_dir / "teacher.json")]
    for seed in (1, 2):
        d = tmp_path / f"teacher-s{seed}"
        train_teacher(TeacherConfig(dataset=prepared, out_dir=d, arch="cnn", epochs=2, device="cpu", batch_size=32,
                                    seed=seed), progress=False)
        out.append((_cache(tmp_path, prepared, d, f"m{seed}", views=K, mixup=1.0), d / "teacher.json"))
    return out


@pytest.fixture
def ensemble_cache(tmp_path, members) -> Path:
    out = tmp_path / "cache" / "ensemble.h5"
    write_ensemble(EnsembleConfig(members=[c for c, _ in members], records=[r for _, r in members], out=out))
    return out


# --- mixup views -------------------------------------------------------------------------------------
def test_mix_views_is_exact_integer_blending():
    a = torch.tensor([0, 10, 255, 100], dtype=torch.uint8).view(4, 1, 1, 1)
    b = torch.tensor([255, 11, 0, 100], dtype=torch.uint8).view(4, 1, 1, 1)
    out = mix_views(a, b, torch.tensor([255, 128, 200, 170])).flatten().tolist()
    assert out == [0, round((128 * 10 + 127 * 11) / 255), round(200 * 255 / 255), 100]
    partner, weight = draw_view_mix(100, 4, seed=1, alpha=1.0)
    assert partner.shape == weight.shape == (400,) and weight.dtype == np.uint8
    assert weight.min() >= 128 and partner.max() < 100
    assert np.array_equal(draw_view_mix(100, 4, seed=1, alpha=1.0)[1], weight)


def test_each_mixup_view_holds_the_teachers_logits_for_exactly_that_blend(mixup_cache, tiny_dataset, teacher_dir):
    cache = LogitCache(mixup_cache)
    n = len(tiny_dataset.y_train)
    assert cache.mixup == 1.0
    partner, weight = cache.view_mix(K)
    assert partner.shape == weight.shape == (n, K) and bool((partner != torch.arange(n)[:, None]).any())
    teacher = load_teacher(teacher_dir / "teacher.pt").model
    x, rows = torch.from_numpy(tiny_dataset.x_train), torch.arange(n)
    for j in range(K):
        seen = predict(teacher, render_views(x, rows, cache.view_params()[:, j], 2, partner[:, j], weight[:, j]))
        torch.testing.assert_close(cache.logits(VIEW_SPLIT)[rows * K + j], seen, rtol=0, atol=1e-5)
    # The crops and flips are the ones the same VIEW_SEED draws without mixup.
    plain = _cache(mixup_cache.parent.parent, mixup_cache.parent.parent / "dataset" / "tiny.npz", teacher_dir,
                   "plain", views=K, view_seed=7)
    assert torch.equal(LogitCache(plain).view_params(), cache.view_params())


def test_replay_renders_the_epochs_mixed_views_and_their_blended_labels(tmp_path, prepared, mixup_cache, tiny_dataset):
    cache = LogitCache(mixup_cache)
    epoch = {"now": 2}
    x = torch.from_numpy(tiny_dataset.x_train)
    replay = ReplayedViews(x, cache.view_params(), seed=0, epoch=lambda: epoch["now"], mix=cache.view_mix(K),
                           block_rows=10)
    rows = torch.tensor([4, 0, 50])
    view = replay.choice(rows)
    partner, weight = replay.mixing(rows)
    expected = render_views(x, rows, cache.view_params()[rows, view], 2, partner, weight)
    assert torch.equal(replay[rows], expected)
    everything = torch.arange(len(x))
    before = replay[everything].clone()
    epoch["now"] = 3                          # a new epoch renders every row's next view
    assert not torch.equal(replay[everything], before)
    assert torch.equal(replay.choice(everything), (replay.offsets + 3) % K)
    m = train_student(StudentConfig(cache=mixup_cache, dataset=prepared, out_dir=tmp_path / "r", epochs=2,
                                    batch_size=16, replay=K, alpha=0.5, T=2.0), progress=False)
    assert m["mixup"] == 1.0 and m["inputs"] == f"{K} cached views" and 0 <= m["test_acc"] <= 1


def test_mixup_needs_views_and_a_sane_alpha(tmp_path, prepared, teacher_dir):
    with pytest.raises(UsageError, match="MIXUP needs cached views"):
        LogitsConfig(teacher=teacher_dir / "teacher.pt", dataset=prepared, out=tmp_path / "c.h5", mixup=1.0)
    with pytest.raises(UsageError, match=r"MIXUP must be a number in \[0, 1000\]"):
        LogitsConfig(teacher=teacher_dir / "teacher.pt", dataset=prepared, out=tmp_path / "c.h5", views=2, mixup=-1)


def test_a_broken_mixup_weight_is_refused(tmp_path, mixup_cache):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(mixup_cache.read_bytes())
    with h5py.File(bad, "a") as f:
        data = f[VIEW_SPLIT]["mix_weight"][()]
        data[0] = 3
        del f[VIEW_SPLIT]["mix_weight"]
        f[VIEW_SPLIT].create_dataset("mix_weight", data=data, fletcher32=True)
    with pytest.raises(UsageError, match="mixup partners or weights"):
        LogitCache(bad)


# --- losses ------------------------------------------------------------------------------------------
def test_kl_only_ignores_the_labels_and_soft_labels_weight_the_cross_entropy():
    torch.manual_seed(0)
    z, t = torch.randn(5, 4), torch.log_softmax(torch.randn(5, 4), dim=-1)
    a = kd_loss_from_log_targets(z, t, torch.zeros(5, dtype=torch.long), T=2.0, alpha=1.0)
    b = kd_loss_from_log_targets(z, t, torch.full((5,), 3), T=2.0, alpha=1.0)
    assert torch.equal(a, b) and a > 0
    y, y2, lam = torch.tensor([0, 1, 2, 3, 0]), torch.tensor([1, 1, 0, 2, 3]), 0.7
    soft = lam * F.one_hot(y, 4) + (1 - lam) * F.one_hot(y2, 4)
    mixed = kd_loss_from_log_targets(z, t, soft.float(), T=2.0, alpha=0.0)
    expected = lam * F.cross_entropy(z, y) + (1 - lam) * F.cross_entropy(z, y2)
    torch.testing.assert_close(mixed, expected)


# --- ensembles ---------------------------------------------------------------------------------------
def test_ensemble_keeps_every_member_and_records_their_accuracies(ensemble_cache, members):
    ens = LogitCache(ensemble_cache)
    singles = [LogitCache(c) for c, _ in members]
    assert ens.members == 3 and ens.views == K and ens.mixup == 1.0
    for split in ens.splits:
        stack = torch.stack([s.logits(split) for s in singles], dim=1)
        torch.testing.assert_close(ens.logits(split), stack.mean(dim=1), rtol=0, atol=1e-6)
        for m in range(3):
            member = LogitCache(ensemble_cache, combine=m)
            torch.testing.assert_close(member.logits(split), singles[m].logits(split), rtol=0, atol=0)
    labels = torch.from_numpy(ens.labels("test"))
    accs = [float((s.logits("test").argmax(1) == labels).float().mean()) for s in singles]
    assert ens.attrs["member_test_acc"].tolist() == pytest.approx(accs)
    assert ens.attrs["teacher_test_acc"] == pytest.approx(ens.teacher_accuracy("test"))
    records = json.loads(ens.attrs["member_records"])
    assert [r["name"] for r in records] == ["m0", "m1", "m2"]
    # The views, their mixup and the labels are the members' own.
    assert torch.equal(ens.view_params(), singles[0].view_params())
    assert torch.equal(ens.view_mix(K)[0], singles[0].view_mix(K)[0])


def test_mean_of_probabilities_is_what_combine_probs_targets(ensemble_cache, members):
    probs = LogitCache(ensemble_cache, combine="probs")
    singles = [LogitCache(c) for c, _ in members]
    T = 3.0
    expected = torch.stack([torch.softmax(s.logits("train") / T, dim=-1) for s in singles]).mean(0).log()
    torch.testing.assert_close(probs.log_soft_targets(T), expected, rtol=0, atol=1e-5)
    rows, view = torch.tensor([3, 1]), torch.tensor([2, 0])
    expected_views = torch.stack([torch.log_softmax(s.logits(VIEW_SPLIT)[rows * K + view] / T, -1).exp()
                                  for s in singles]).mean(0).log()
    torch.testing.assert_close(probs.batch_view_log_soft_targets(rows, view, T), expected_views, rtol=0, atol=1e-5)
    labels = torch.from_numpy(probs.labels("test"))
    assert probs.teacher_accuracy("test") == pytest.approx(
        float((probs.logits("test").argmax(1) == labels).float().mean()))
    assert probs.attrs["ensemble_probs_test_acc"] == pytest.approx(probs.teacher_accuracy("test"))


def test_students_learn_from_any_combination_and_say_which(tmp_path, prepared, ensemble_cache):
    for combine, suffix in (("logits", ""), ("probs", "-probs"), ("1", "-m1")):
        cfg = StudentConfig(cache=ensemble_cache, dataset=prepared, out_dir=tmp_path / combine, epochs=1,
                            batch_size=16, replay=2, alpha=1.0, T=2.0, combine=combine, teacher_tag="x3")
        assert cfg.run_name == f"cnn-tiny-T2-a1-from-x3{suffix}-r2-s0-e1-on-tiny"
        m = train_student(cfg, progress=False)
        assert m["teacher_members"] == 3 and m["combine"] == combine and m["teacher_tag"] == "-x3"


def test_ensemble_errors_name_the_fix(tmp_path, prepared, teacher_dir, members, ensemble_cache, cache_file):
    caches = [c for c, _ in members]
    with pytest.raises(UsageError, match="member 3 is missing from it; use COMBINE=0..2"):
        LogitCache(ensemble_cache, combine=3)
    with pytest.raises(UsageError, match="one teacher's logits, so COMBINE=probs has no ensemble"):
        LogitCache(cache_file, combine="probs")
    with pytest.raises(UsageError, match="COMBINE must be logits, probs or a member number"):
        StudentConfig(cache=cache_file, dataset=prepared, out_dir=tmp_path / "r", combine="median")
    with pytest.raises(UsageError, match="disagree on views"):            # a member without the same views
        write_ensemble(EnsembleConfig(members=[caches[0], cache_file], out=tmp_path / "e.h5"))
    with pytest.raises(UsageError, match="was not made by the teacher in"):   # records in the wrong order
        write_ensemble(EnsembleConfig(members=caches[:2], records=[members[1][1], members[0][1]],
                                      out=tmp_path / "e.h5"))
    with pytest.raises(UsageError, match="is missing"):                    # a member cache that is not there
        write_ensemble(EnsembleConfig(members=[caches[0], tmp_path / "gone.h5"], out=tmp_path / "e.h5"))
    top = _cache(tmp_path, prepared, teacher_dir, "top", views=K, mixup=1.0, topk=2)
    with pytest.raises(UsageError, match="members must store every logit"):
        write_ensemble(EnsembleConfig(members=[caches[0], top], out=tmp_path / "e.h5"))
    with pytest.raises(UsageError, match="at least 2 member caches"):
        EnsembleConfig(members=[caches[0]], out=tmp_path / "e.h5")
    assert not (tmp_path / "e.h5").exists()


# --- published caches --------------------------------------------------------------------------------
def test_published_cache_is_float16_marked_and_verified_against_its_record(tmp_path, prepared, ensemble_cache,
                                                                           members):
    out = tmp_path / "published" / "tiny.h5"
    record = publish_cache(PublishConfig(cache=ensemble_cache, out=out, command="make teacher-logits TEACHERS=3",
                                         device="2-core CPU (test)", records=[r for _, r in members]))
    pub = LogitCache(out)
    with h5py.File(out) as f:
        assert f["train/logits"].dtype == np.float16 and "member_logits" not in f["train"]
    assert pub.attrs["published"] and json.loads(pub.attrs["published_record"])["device"] == "2-core CPU (test)"
    on_disk = json.loads(out.with_suffix(".json").read_text())
    assert on_disk["fingerprint"] == pub.fingerprint and on_disk["teacher_devices"] == ["cpu"]
    assert on_disk["teacher_seconds"] == pytest.approx(sum(json.loads(r.read_text())["train_seconds"]
                                                           for _, r in members))
    recorded, recomputed = check_recorded_accuracy(pub)
    assert recorded == recomputed == record["teacher_test_acc"]
    torch.testing.assert_close(pub.logits("test"), LogitCache(ensemble_cache).logits("test"), rtol=1e-3, atol=1e-2)
    # A student from it records that its teacher was published, not made here.
    m = train_student(StudentConfig(cache=out, dataset=prepared, out_dir=tmp_path / "r", epochs=1, batch_size=16,
                                    teacher_tag="published"), progress=False)
    assert m["published"] is True

    # verify recomputes the accuracy: a record that does not match the logits fails, exit 2. An edit that
    # left the digests as they were is refused by them; a careful one (digests rewritten) by the accuracy.
    with h5py.File(out, "a") as f:
        f.attrs["teacher_test_acc"] = recorded - 0.25
    with pytest.raises(UsageError, match="attributes differ from the digest"):
        LogitCache(out)
    with h5py.File(out, "a") as f:
        seal(f)
    result = subprocess.run([sys.executable, "-m", "stages.cli", "verify", str(out)], capture_output=True, text=True)
    assert result.returncode == 2 and "records" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_a_published_cache_from_another_dataset_is_refused_with_the_fix(tmp_path, ensemble_cache):
    from pipeline.data.prepare import save_prepared
    from tests.conftest import make_dataset

    out = tmp_path / "published" / "tiny.h5"
    publish_cache(PublishConfig(cache=ensemble_cache, out=out, command="c", device="d"))
    other = tmp_path / "other.npz"
    save_prepared(make_dataset(seed=5), other)
    with pytest.raises(UsageError, match="published cache .* different dataset.*drop TEACHER=published"):
        train_student(StudentConfig(cache=out, dataset=other, out_dir=tmp_path / "r", epochs=1), progress=False)


# --- report ------------------------------------------------------------------------------------------
def test_report_shows_the_teacher_and_the_fraction_of_the_gap_closed():
    def run(alpha, acc, seed, tag=""):
        return {"student": "cnn-tiny", "epochs": 5, "alpha": alpha, "T": 4.0, "seed": seed, "params": 1000,
                "test_acc": acc, "seconds_per_epoch": 1.0, "teacher_test_acc": 0.94, "teacher_tag": tag}
    rows = summarize([run(0, 0.90, 0), run(0, 0.90, 1), run(0.9, 0.92, 0, "-e30-x3"), run(0.9, 0.92, 1, "-e30-x3")])
    kd = next(r for r in rows if r["alpha"])
    assert kd["arm"] == "KD T=4 ALPHA=0.9 from e30-x3"
    assert kd["gap_closed"] == pytest.approx(0.5)               # 2 of the 4 pp between scratch and teacher
    table = render_markdown(rows)
    assert "| 94.00 | +50% |" in table and "teacher %" in table

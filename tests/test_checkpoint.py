import pytest
import torch

from pipeline.errors import UsageError
from pipeline.models import create_student
from pipeline.training.checkpoint import load_checkpoint, save_checkpoint


def test_round_trip_rebuilds_the_same_function(tmp_path):
    kwargs = {"in_shape": (1, 12, 12), "num_classes": 3, "mean": [0.4], "std": [0.2]}
    model = create_student("cnn-tiny", **kwargs)
    fp = save_checkpoint(tmp_path / "m.pt", kind="student", arch="cnn-tiny", model=model, model_kwargs=kwargs,
                         config={"a": 1}, metrics={"test_acc": 0.5})
    loaded, ckpt = load_checkpoint(tmp_path / "m.pt", "student", "student")
    x = torch.rand(4, 1, 12, 12)
    assert torch.equal(loaded(x), model.eval()(x))
    assert ckpt["fingerprint"] == fp and ckpt["config"] == {"a": 1}


def test_refuses_what_is_not_a_softcache_checkpoint(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"definitely not a checkpoint")
    with pytest.raises(UsageError, match="not a softcache checkpoint"):
        load_checkpoint(tmp_path / "junk.pt", "teacher", "teacher")
    torch.save({"state_dict": {}}, tmp_path / "plain.pt")
    with pytest.raises(UsageError, match="not a softcache checkpoint"):
        load_checkpoint(tmp_path / "plain.pt", "teacher", "teacher")


def test_refuses_the_wrong_kind_and_tampered_weights(tmp_path):
    kwargs = {"in_shape": (1, 12, 12), "num_classes": 3}
    save_checkpoint(tmp_path / "s.pt", kind="student", arch="mlp", model=create_student("mlp", **kwargs),
                    model_kwargs=kwargs, config={}, metrics={})
    with pytest.raises(UsageError, match="not a teacher"):
        load_checkpoint(tmp_path / "s.pt", "teacher", "teacher")
    ckpt = torch.load(tmp_path / "s.pt", weights_only=True)
    ckpt["state_dict"]["2.weight"] += 1.0
    torch.save(ckpt, tmp_path / "s.pt")
    with pytest.raises(UsageError, match="fingerprint"):
        load_checkpoint(tmp_path / "s.pt", "student", "student")

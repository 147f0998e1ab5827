"""The per-token cache in a user's own loop: windows paired with their own targets (checked against the
text's fingerprint), the same through DataLoader workers, the loss over support + tail equal to the
dense KL when the tail is one token, and the guide's plain-PyTorch example run in a fresh interpreter."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from pipeline.cache.lm_dataset import TokenTargetDataset
from pipeline.cache.lm_format import target_log_probs, token_targets
from pipeline.config import TokenLogitsConfig
from pipeline.errors import UsageError
from pipeline.losses import token_kd_loss
from pipeline.teacher.lm_pass import write_token_logits
from tests.test_lm_teacher import text_file  # noqa: F401  (the fixture)
from tests.test_token_pass import lm_teacher  # noqa: F401  (the fixture)

README = Path(__file__).resolve().parents[1] / "docs" / "GUIDE.md"   # the guide holds the tested examples


@pytest.fixture
def token_cache(tmp_path, lm_teacher, text_file):  # noqa: F811
    cfg = TokenLogitsConfig(teacher=lm_teacher, text=text_file, out=tmp_path / "tokens.h5", topk=8,
                            temperatures=(1.0, 2.0), device="cpu", threads=1)
    write_token_logits(cfg, progress=False)
    return cfg.out


def test_items_pair_each_window_with_its_own_targets_also_in_workers(token_cache, text_file):  # noqa: F811
    ds = TokenTargetDataset(token_cache, text_file, T=2.0)
    tokens, ids, log_probs, log_tail = ds[3]
    assert tokens.shape == (17,) and ids.shape == log_probs.shape == (16, 8) and log_tail.shape == (16,)
    total = torch.logsumexp(torch.cat([log_probs, log_tail[:, None]], -1), -1)
    assert torch.allclose(total, torch.zeros(16), atol=2e-3)                # float16 support, exact tail
    batches = list(DataLoader(ds, batch_size=5, num_workers=2))
    assert torch.equal(torch.cat([b[0] for b in batches]), torch.stack([ds[i][0] for i in range(len(ds))]))
    assert torch.equal(torch.cat([b[2] for b in batches]), torch.stack([ds[i][2] for i in range(len(ds))]))
    with pytest.raises(UsageError, match="T=3 is not in the cache's temperature grid"):
        TokenTargetDataset(token_cache, text_file, T=3.0)


def test_the_loss_over_support_and_tail_is_the_dense_kl_when_the_tail_is_one_token():
    torch.manual_seed(0)
    teacher, student, y = torch.randn(2, 5, 50) * 2, torch.randn(2, 5, 50), torch.randint(0, 50, (2, 5))
    dense = token_kd_loss(student, y, None, F.log_softmax(teacher / 2, -1), None, T=2.0, alpha=0.7)
    sparse = token_kd_loss(student, y, *target_log_probs(token_targets(teacher, 49, (2.0,)), 2.0, (2.0,)),
                           T=2.0, alpha=0.7)
    coarse = token_kd_loss(student, y, *target_log_probs(token_targets(teacher, 8, (2.0,)), 2.0, (2.0,)),
                           T=2.0, alpha=1.0)
    assert torch.allclose(sparse, dense, atol=1e-5)
    kl = token_kd_loss(student, y, None, F.log_softmax(teacher / 2, -1), None, T=2.0, alpha=1.0)
    assert 0 < coarse < kl                 # merging classes into a bucket can only lower the KL
    assert torch.allclose(token_kd_loss(student, y, None, None, None, T=2.0, alpha=0.0),
                          F.cross_entropy(student.flatten(0, 1), y.flatten()))
    with pytest.raises(ValueError, match="must be .B, L, V. and targets .B, L."):
        token_kd_loss(student[0], y, None, None, None, T=2.0, alpha=0.5)


def test_the_readme_token_example_trains_a_student_in_a_fresh_interpreter(token_cache, text_file):  # noqa: F811
    code = re.search(r"<!-- token-loop-example -->\s*```python\n(.*?)```", README.read_text(), re.S).group(1)
    code = re.sub(r'CACHE = ".*"', f'CACHE = "{token_cache}"', code)
    code = re.sub(r'TEXT = ".*"', f'TEXT = "{text_file}"', code)
    code = re.sub(r"STEPS = \d+", "STEPS = 60", code)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          cwd=README.parents[1])
    assert proc.returncode == 0, proc.stderr
    bits = float(re.search(r"val bits per token ([0-9.]+)", proc.stdout).group(1))
    assert bits < 6, proc.stdout              # a uniform guess over 256 bytes is 8 bits

import pytest
import torch
import torch.nn.functional as F

from pipeline.losses import kd_loss


def direct_formula(s, t, y, T, alpha):
    p_t = torch.softmax(t / T, dim=1)
    p_s = torch.softmax(s / T, dim=1)
    kl = (p_t * (p_t.log() - p_s.log())).sum(dim=1).mean()
    ce = -torch.log_softmax(s, dim=1)[torch.arange(len(y)), y].mean()
    return alpha * T * T * kl + (1 - alpha) * ce


@pytest.mark.parametrize("T,alpha", [(1.0, 0.5), (4.0, 0.9), (8.0, 1.0), (2.5, 0.1)])
def test_matches_direct_formula(T, alpha):
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(16, 10, generator=g) * 3, torch.randn(16, 10, generator=g) * 3
    y = torch.randint(0, 10, (16,), generator=g)
    assert torch.allclose(kd_loss(s, t, y, T=T, alpha=alpha), direct_formula(s, t, y, T, alpha), atol=1e-5)


def test_alpha_zero_is_cross_entropy():
    g = torch.Generator().manual_seed(1)
    s, t = torch.randn(8, 5, generator=g), torch.randn(8, 5, generator=g)
    y = torch.randint(0, 5, (8,), generator=g)
    assert torch.equal(kd_loss(s, t, y, T=4.0, alpha=0.0), F.cross_entropy(s, y))


def test_identical_logits_give_zero_soft_term():
    s = torch.randn(4, 3)
    assert kd_loss(s, s.clone(), torch.zeros(4, dtype=torch.long), T=3.0, alpha=1.0).abs() < 1e-6


def test_t_squared_keeps_gradient_scale():
    # For logits small next to T, d(T^2 KL)/dz_s ~ (z_s - z_t)/(C B): independent of T.
    g = torch.Generator().manual_seed(2)
    t = torch.randn(32, 10, generator=g)
    base = torch.randn(32, 10, generator=g)
    y = torch.zeros(32, dtype=torch.long)
    norms = {}
    for T in (4.0, 8.0, 16.0):
        s = base.clone().requires_grad_(True)
        kd_loss(s, t, y, T=T, alpha=1.0).backward()
        norms[T] = s.grad.norm().item()
    assert norms[16.0] / norms[4.0] == pytest.approx(1.0, rel=0.1)
    assert norms[8.0] / norms[4.0] == pytest.approx(1.0, rel=0.1)

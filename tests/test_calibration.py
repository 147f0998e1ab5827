import pytest
import torch

from pipeline.training.calibration import reliability


def test_perfectly_calibrated_and_overconfident_predictions():
    # Two classes; confidence 0.75 on every row, right on 3 of 4 rows: calibrated, ECE 0.
    logits = torch.log(torch.tensor([[0.75, 0.25]] * 4))
    labels = torch.tensor([0, 0, 0, 1])
    r = reliability(logits, labels, bins=10)
    assert r["ece"] == pytest.approx(0.0, abs=1e-6)
    assert r["count"][7] == 4 and sum(r["count"]) == 4
    # Same confidence, right on 1 of 4: ECE = |0.25 - 0.75| = 0.5.
    assert reliability(logits, torch.tensor([0, 1, 1, 1]), bins=10)["ece"] == pytest.approx(0.5)


def test_confidence_one_lands_in_the_last_bin():
    r = reliability(torch.tensor([[100.0, -100.0]]), torch.tensor([0]), bins=15)
    assert r["count"][-1] == 1 and r["ece"] == pytest.approx(0.0, abs=1e-6)

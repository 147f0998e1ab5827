import torch
import torch.nn.functional as F

from pipeline.models import create_teacher
from pipeline.training.loop import accuracy, augment_batch, fit, predict


def test_augment_is_a_shifted_or_flipped_crop_and_seeded():
    x = torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).view(2, 1, 6, 6)
    a = augment_batch(x, torch.Generator().manual_seed(0), pad=2)
    b = augment_batch(x, torch.Generator().manual_seed(0), pad=2)
    assert torch.equal(a, b) and a.shape == x.shape
    padded = F.pad(x, (2, 2, 2, 2))
    for i in range(2):
        windows = [padded[i, :, dy:dy + 6, dx:dx + 6] for dy in range(5) for dx in range(5)]
        assert any(torch.equal(a[i], w) or torch.equal(a[i], w.flip(-1)) for w in windows)


def test_fit_learns_the_fixture_and_is_reproducible(tiny_dataset):
    x, y = torch.from_numpy(tiny_dataset.x_train), torch.from_numpy(tiny_dataset.y_train)
    results = []
    for _ in range(2):
        torch.manual_seed(0)
        model = create_teacher("cnn", in_shape=(1, 12, 12), num_classes=3)
        fit(model, x, lambda logits, idx: F.cross_entropy(logits, y[idx]), epochs=4, batch_size=16, lr=3e-3,
            weight_decay=0.0, seed=0, augment=False, progress=False)
        results.append(predict(model, torch.from_numpy(tiny_dataset.x_test)))
    assert torch.equal(results[0], results[1])
    assert accuracy(results[0], torch.from_numpy(tiny_dataset.y_test)) > 0.9


def test_bf16_autocast_path_runs_on_cpu(tiny_dataset):
    # The GPU teacher trains under bf16 autocast; the same code path must work on the CPU.
    x, y = torch.from_numpy(tiny_dataset.x_train), torch.from_numpy(tiny_dataset.y_train)
    model = create_teacher("resnet18", in_shape=(1, 12, 12), num_classes=3)
    fit(model, x[:32], lambda logits, idx: F.cross_entropy(logits, y[idx]), epochs=1, batch_size=16,
        lr=1e-3, weight_decay=0.0, seed=0, augment=True, amp=True, progress=False)
    logits = predict(model, x[:8], amp=True)
    assert logits.dtype == torch.float32 and torch.isfinite(logits).all()

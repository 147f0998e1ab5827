"""softcache's own image models: students and teachers, each registered by name (the timm pattern).

Every model starts with a :class:`Normalize` layer holding the training split's mean
and std, so a model takes raw images scaled to [0, 1] and a saved checkpoint or an
exported graph needs nothing else to classify an image. Variants are data: each
registered function only picks the numbers for one of the private builders below.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from pipeline.errors import UsageError

__all__ = ["Normalize", "image_stats", "build_image_student", "build_image_teacher", "image_students", "image_teachers",
           "count_params", "register_student", "register_teacher"]

ModelFactory = Callable[..., nn.Module]
_STUDENTS: dict[str, ModelFactory] = {}
_TEACHERS: dict[str, ModelFactory] = {}


def register_student(fn: ModelFactory) -> ModelFactory:
    """Register a student factory under its function name, with '_' spelled '-'."""
    _STUDENTS[fn.__name__.replace("_", "-")] = fn
    return fn


def register_teacher(fn: ModelFactory) -> ModelFactory:
    _TEACHERS[fn.__name__.replace("_", "-")] = fn
    return fn


def image_students() -> list[str]:
    return sorted(_STUDENTS)


def image_teachers() -> list[str]:
    return sorted(_TEACHERS)


def build_image_student(name: str, **kwargs) -> nn.Module:
    """A registered image student (the name is known: :mod:`pipeline.models` dispatches)."""
    return _STUDENTS[name](**{k: v for k, v in kwargs.items() if v is not None})


def build_image_teacher(name: str, **kwargs) -> nn.Module:
    if name not in _TEACHERS:
        raise UsageError(f"unknown teacher '{name}'; choose one of: {', '.join(image_teachers())}")
    return _TEACHERS[name](**{k: v for k, v in kwargs.items() if v is not None})


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


class Normalize(nn.Module):
    """(x - mean) / std with per-channel statistics kept as buffers (saved with the model)."""

    def __init__(self, mean: list[float], std: list[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def image_stats(in_shape, mean, std) -> tuple[list[float], list[float]]:
    channels = in_shape[0]
    return (list(mean) if mean is not None else [0.5] * channels,
            list(std) if std is not None else [0.25] * channels)


def _mlp(hidden: list[int], in_shape, num_classes, mean, std) -> nn.Module:
    mean, std = image_stats(in_shape, mean, std)
    layers: list[nn.Module] = [Normalize(mean, std), nn.Flatten()]
    width = in_shape[0] * in_shape[1] * in_shape[2]
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU(inplace=True)]
        width = h
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


def _conv_bn_relu(cin: int, cout: int, batchnorm: bool) -> list[nn.Module]:
    conv = nn.Conv2d(cin, cout, 3, padding=1, bias=not batchnorm)
    return [conv, nn.BatchNorm2d(cout), nn.ReLU(inplace=True)] if batchnorm else [conv, nn.ReLU(inplace=True)]


def _convnet(stages: list[list[int]], head: list[int], batchnorm: bool, global_pool: bool,
             in_shape, num_classes, mean, std) -> nn.Module:
    """Conv stages separated by 2x2 max-pooling, then either global average pooling
    or a flatten, then a small fully-connected head."""
    mean, std = image_stats(in_shape, mean, std)
    layers: list[nn.Module] = [Normalize(mean, std)]
    cin, h, w = in_shape
    for i, stage in enumerate(stages):
        if i > 0:
            layers.append(nn.MaxPool2d(2))
            h, w = h // 2, w // 2
        for cout in stage:
            layers += _conv_bn_relu(cin, cout, batchnorm)
            cin = cout
    if global_pool:
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        width = cin
    else:
        layers += [nn.MaxPool2d(2), nn.Flatten()]
        width = cin * (h // 2) * (w // 2)
    for units in head:
        layers += [nn.Linear(width, units), nn.ReLU(inplace=True)]
        width = units
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout),
        )
        self.shortcut = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
            if stride != 1 or cin != cout else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


def _resnet(widths: list[int], blocks: list[int], in_shape, num_classes, mean, std) -> nn.Module:
    """CIFAR-style ResNet: 3x3 stem, no max-pool, one stride-2 step per stage after the first."""
    mean, std = image_stats(in_shape, mean, std)
    layers: list[nn.Module] = [
        Normalize(mean, std),
        nn.Conv2d(in_shape[0], widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True),
    ]
    cin = widths[0]
    for i, (width, n) in enumerate(zip(widths, blocks)):
        for j in range(n):
            layers.append(_BasicBlock(cin, width, 2 if (i > 0 and j == 0) else 1))
            cin = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, num_classes)]
    return nn.Sequential(*layers)


# --- students -------------------------------------------------------------------------

@register_student
def mlp(in_shape=(1, 28, 28), num_classes=10, mean=None, std=None) -> nn.Module:
    """One hidden layer of 128 units (about 102k parameters at 28x28)."""
    return _mlp([128], in_shape, num_classes, mean, std)


@register_student
def cnn_tiny(in_shape=(1, 28, 28), num_classes=10, mean=None, std=None) -> nn.Module:
    """2 conv + 2 linear, no BatchNorm (about 26.5k parameters at 28x28)."""
    return _convnet([[12], [24]], [20], False, False, in_shape, num_classes, mean, std)


@register_student
def cnn_small(in_shape=(1, 28, 28), num_classes=10, mean=None, std=None) -> nn.Module:
    """4 conv with BatchNorm and global average pooling (about 74k parameters); the
    first convolution is narrow because it runs at full resolution and dominates CPU time."""
    return _convnet([[24], [48, 48], [96]], [], True, True, in_shape, num_classes, mean, std)


# --- teachers -------------------------------------------------------------------------

@register_teacher
def cnn(in_shape=(1, 28, 28), num_classes=10, mean=None, std=None) -> nn.Module:
    """The CPU teacher: 5 conv with BatchNorm, sized to train in minutes on 2 cores."""
    return _convnet([[32, 32], [64, 64], [128]], [], True, True, in_shape, num_classes, mean, std)


@register_teacher
def resnet18(in_shape=(1, 28, 28), num_classes=10, mean=None, std=None) -> nn.Module:
    """The GPU teacher: ResNet-18 layout (11.2M parameters), 3x3 stem for small images."""
    return _resnet([64, 128, 256, 512], [2, 2, 2, 2], in_shape, num_classes, mean, std)

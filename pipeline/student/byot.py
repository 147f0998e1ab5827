"""Be Your Own Teacher (BYOT; Zhang, Song, Gao, Chen, Bao, Ma, ICCV 2019, arXiv 1905.08094): the
auxiliary-branch kind of self-distillation.

A shallow classifier is attached to the end of each of the student's stages but the last; the
deployed head teaches every branch, and every classifier also learns the hard labels. For the
deployed head's logits z_C, the branches' logits z_i and pooled features f_i (i < C), and the
deployed network's pooled last-stage feature f_C:

    L = (1 - alpha) * [CE(z_C, y) + sum_i CE(z_i, y)]
        + alpha * T^2 * sum_i KL(softmax(z_C / T) || softmax(z_i / T))      (z_C detached)
        + beta * sum_i ||f_i - f_C||^2                                       (f_C detached; summed over the batch)

The defaults alpha = 0.1, beta = 1e-6, T = 3 are those of the authors' released training script
(its feature term is summed over the batch too, hence the small beta). The branches only add
gradient to the shared stages during training: they are never part of the saved student, its
export or its parameter count.

Why BYOT rather than TESKD (Li et al. 2021, arXiv 2110.00329): TESKD's FPN-like hierarchical
student branches need lateral and top-down blocks whose shapes the paper fixes for ResNets only;
BYOT's branch is one block and a linear head on any stage, which fits a 2-stage CNN as well as a
4-stage one, and its loss and hyper-parameters are fully stated in the paper and its code.

A branch here is: average pooling to the last stage's resolution, a 1x1 convolution to the last
stage's width with BatchNorm and ReLU (the paper's "bottleneck", one block deep and pointwise, so that
the branches stay cheap beside a small student's own convolutions: with a full 3x3 convolution a
cnn-tiny epoch took 1.83x scratch's, a depthwise-separable one 1.58x, this one 1.44x; cnn-small 1.21x;
one epoch on 6,000 Fashion-MNIST rows, one thread), global average pooling (f_i), and a linear
classifier (z_i). Stages are found in softcache's own convolutional
students: a stage ends where a pooling layer halves the resolution (:func:`stage_ends`).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.errors import UsageError
from pipeline.losses import soft_kl
from pipeline.models import create_student
from pipeline.models.images import image_students

__all__ = ["BYOT_REFERENCE", "stage_ends", "branch_students", "check_branch_student", "BranchedStudent", "Heads",
           "byot_loss"]

BYOT_REFERENCE = "Zhang et al., Be Your Own Teacher, ICCV 2019 (arXiv 1905.08094)"
_POOLS = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)


def stage_ends(model: nn.Module) -> list[int]:
    """Indices of the layers after which a stage of a sequential convolutional student ends (the layer just
    before each pooling layer that follows a convolution); [] for a student with no such stages (an MLP, a
    model that is not one nn.Sequential)."""
    if not isinstance(model, nn.Sequential):
        return []
    ends, seen_conv = [], False
    for i, layer in enumerate(model):
        seen_conv = seen_conv or isinstance(layer, nn.Conv2d)
        if isinstance(layer, _POOLS) and seen_conv and i - 1 not in ends:
            ends.append(i - 1)
    return ends


def branch_students() -> list[str]:
    """softcache's students that have at least two stages, so at least one branch to attach."""
    return [name for name in image_students() if len(stage_ends(create_student(name))) >= 2]


def check_branch_student(student: str) -> None:
    """METHOD=byot needs stages to attach to: one line naming the students that have them."""
    if student not in image_students() or len(stage_ends(create_student(student))) < 2:
        raise UsageError(f"METHOD=byot attaches branches to the stages of softcache's convolutional students "
                         f"({', '.join(branch_students())}); {student} has no stages to attach to: choose one of "
                         f"those, or METHOD=pskd or cskd")


class Heads(NamedTuple):
    """One training forward: the deployed head's logits and pooled last-stage feature, and each branch's."""
    logits: torch.Tensor
    feature: torch.Tensor
    branch_logits: list[torch.Tensor]
    branch_features: list[torch.Tensor]


def _branch(cin: int, cout: int, size: tuple[int, int]) -> nn.Sequential:
    return nn.Sequential(nn.AdaptiveAvgPool2d(size), nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1), nn.Flatten())


class BranchedStudent(nn.Module):
    """The student (``backbone``, unchanged: its ``forward`` is the student's) and BYOT's branches on its
    stages. What trains is this module; what ships is ``backbone``."""

    def __init__(self, backbone: nn.Sequential, in_shape: tuple[int, int, int], num_classes: int):
        super().__init__()
        self.backbone = backbone
        self.ends = stage_ends(backbone)
        if len(self.ends) < 2:
            raise UsageError("METHOD=byot: this student has no stages to attach branches to")
        shapes = self._stage_shapes(in_shape)
        width, height, breadth = shapes[-1]
        self.branches = nn.ModuleList(_branch(c, width, (height, breadth)) for c, _, _ in shapes[:-1])
        self.heads = nn.ModuleList(nn.Linear(width, num_classes) for _ in shapes[:-1])

    @torch.no_grad()
    def _stage_shapes(self, in_shape) -> list[tuple[int, int, int]]:
        was_training = self.backbone.training
        self.backbone.eval()              # a dry run must not move BatchNorm's running statistics
        x, shapes = torch.zeros(1, *in_shape), []
        for i, layer in enumerate(self.backbone):
            x = layer(x)
            if i in self.ends:
                shapes.append(tuple(x.shape[1:]))
        self.backbone.train(was_training)
        return shapes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def forward_all(self, x: torch.Tensor) -> Heads:
        """The deployed head's logits, and each branch's, from one pass through the backbone."""
        taps = []
        for i, layer in enumerate(self.backbone):
            x = layer(x)
            if i in self.ends:
                taps.append(x)
        feature = F.adaptive_avg_pool2d(taps[-1], 1).flatten(1)
        features = [branch(tap) for branch, tap in zip(self.branches, taps[:-1])]
        return Heads(x, feature, [head(f) for head, f in zip(self.heads, features)], features)


def byot_loss(out: Heads, labels: torch.Tensor, *, alpha: float, beta: float, T: float) -> torch.Tensor:
    """The loss in this module's docstring, for one batch (means over the batch but the feature term)."""
    teacher = F.log_softmax(out.logits.detach().float() / T, dim=-1)
    target = out.feature.detach()
    loss = (1 - alpha) * F.cross_entropy(out.logits, labels)
    for logits, feature in zip(out.branch_logits, out.branch_features):
        loss = loss + (1 - alpha) * F.cross_entropy(logits, labels) + alpha * soft_kl(logits, teacher, T)
        if beta:
            loss = loss + beta * (feature - target).pow(2).sum()
    return loss

import pytest
import torch

from pipeline.errors import UsageError
from pipeline.models import (
    count_params,
    create_student,
    create_teacher,
    list_students,
    list_teachers,
)


def test_registry_has_the_promised_students():
    assert {"mlp", "cnn-tiny", "cnn-small"} <= set(list_students())
    assert {"cnn", "resnet18"} <= set(list_teachers())
    assert count_params(create_student("cnn-tiny")) < 30_000
    assert count_params(create_student("cnn-small")) < 100_000
    assert 10e6 < count_params(create_teacher("resnet18")) < 12e6


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(UsageError, match="cnn-tiny"):
        create_student("cnn-huge")


@pytest.mark.parametrize("name", ["mlp", "cnn-tiny", "cnn-small"])
@pytest.mark.parametrize("shape,classes", [((1, 28, 28), 10), ((3, 32, 32), 100)])
def test_students_adapt_to_shape_and_classes(name, shape, classes):
    model = create_student(name, in_shape=shape, num_classes=classes, mean=[0.5] * shape[0], std=[0.2] * shape[0])
    assert model(torch.rand(2, *shape)).shape == (2, classes)


def test_normalisation_lives_in_the_model():
    model = create_student("mlp", in_shape=(1, 4, 4), num_classes=2, mean=[0.3], std=[0.1])
    assert torch.allclose(model[0](torch.full((1, 1, 4, 4), 0.4)), torch.ones(1, 1, 4, 4))

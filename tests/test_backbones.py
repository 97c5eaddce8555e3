import pytest
import torch

from transfer_core.backbones import BACKBONES, Classifier, check_backbone, create_backbone
from transfer_core.registry import UnknownNameError


@pytest.mark.parametrize("name", BACKBONES.names())
@pytest.mark.parametrize("in_chans", [1, 3])
def test_registered_backbones_have_a_head_for_the_task(name, in_chans):
    model = create_backbone(name, num_classes=7, in_chans=in_chans).eval()
    assert isinstance(model, Classifier) and model.head.out_features == 7
    with torch.no_grad():
        assert model(torch.randn(2, in_chans, 32, 32)).shape == (2, 7)
        assert model.body(torch.randn(2, in_chans, 8, 8)).shape == (2, model.num_features)  # any input size


def test_cifar_stem_keeps_resolution():
    body = create_backbone("resnet18_cifar", 10).body
    stem_conv = body.stem[0]
    assert stem_conv.kernel_size == (3, 3) and stem_conv.stride == (1, 1)
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in body.modules())


@pytest.mark.parametrize(
    "name", ["timm:resnet10t", "resnet10t", "torchvision:resnet18", "torchvision:mobilenet_v3_small"]
)
def test_library_models_by_name_get_a_new_head(name):
    check_backbone(name)
    model = create_backbone(name, num_classes=100).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 100)  # never the 1000-way ImageNet head


def test_reset_head_sizes_for_a_new_task():
    model = create_backbone("resnet8", 10)
    model.reset_head(100)
    assert model.head.out_features == 100


@pytest.mark.parametrize("name", ["resnet9000", "timm:not_a_model", "torchvision:not_a_model", "keras:resnet"])
def test_unknown_names_fail_loudly(name):
    with pytest.raises(UnknownNameError):
        check_backbone(name)

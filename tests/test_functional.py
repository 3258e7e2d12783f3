import pytest
import torch

from brushwork import functional as fn


def test_mean_std_per_channel():
    features = torch.arange(24, dtype=torch.float32).reshape(1, 2, 3, 4)
    mean, std = fn.mean_std(features)
    assert mean.shape == std.shape == (1, 2, 1, 1)
    assert torch.allclose(mean.flatten(), torch.tensor([5.5, 17.5]))
    # unbiased variance of 0..11 is 13, plus eps
    assert torch.allclose(std.flatten(), torch.full((2,), (13.0 + fn.EPS) ** 0.5))
    with pytest.raises(ValueError):
        fn.mean_std(torch.zeros(2, 3, 4))


def test_adaptive_instance_norm_takes_the_target_statistics():
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(2, 3, 16, 16, generator=generator) * 4 + 1
    target_mean = torch.tensor([0.5, -2.0, 3.0]).reshape(1, 3, 1, 1).expand(2, 3, 1, 1)
    target_std = torch.tensor([1.0, 0.25, 2.0]).reshape(1, 3, 1, 1).expand(2, 3, 1, 1)
    mean, std = fn.mean_std(fn.adaptive_instance_norm(features, target_mean, target_std))
    assert torch.allclose(mean, target_mean, atol=1e-5)
    assert torch.allclose(std, target_std, atol=1e-3)


def test_blend_and_weights():
    a, b = torch.ones(2), torch.full((2,), 3.0)
    assert torch.equal(fn.blend([a, b], [0.25, 0.75]), torch.full((2,), 2.5))
    assert fn.normalize_weights(None, 4) == [0.25] * 4
    assert fn.normalize_weights([1, 3], 2) == [0.25, 0.75]
    for bad in ([1], [-1, 2], [0, 0], [float("nan"), 1]):
        with pytest.raises(ValueError):
            fn.normalize_weights(bad, 2)
    with pytest.raises(ValueError):
        fn.blend([a], [0.5, 0.5])


def test_ycbcr_round_trip_and_known_values():
    image = torch.rand(2, 3, 5, 7, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(fn.ycbcr_to_rgb(fn.rgb_to_ycbcr(image)), image, atol=1e-5)
    white = torch.ones(1, 3, 1, 1)
    assert torch.allclose(fn.rgb_to_ycbcr(white).flatten(), torch.tensor([1.0, 0.5, 0.5]), atol=1e-5)
    red = torch.tensor([1.0, 0.0, 0.0]).reshape(1, 3, 1, 1)
    assert torch.allclose(fn.rgb_to_ycbcr(red).flatten(), torch.tensor([0.299, 0.331264, 1.0]), atol=1e-5)


def test_preserve_color_keeps_content_chroma_and_stylised_luminance():
    generator = torch.Generator().manual_seed(2)
    content = torch.rand(1, 3, 8, 8, generator=generator) * 0.5 + 0.25
    stylised = torch.rand(1, 3, 8, 8, generator=generator) * 0.5 + 0.25
    mixed = fn.preserve_color(stylised, content)
    mixed_ycc, content_ycc, stylised_ycc = map(fn.rgb_to_ycbcr, (mixed, content, stylised))
    assert torch.allclose(mixed_ycc[:, 1:], content_ycc[:, 1:], atol=1e-4)
    assert torch.allclose(mixed_ycc[:, :1], stylised_ycc[:, :1], atol=1e-4)
    with pytest.raises(ValueError):
        fn.preserve_color(stylised, content[..., :4])


def test_mean_std_of_half_precision_features_is_computed_in_float32():
    features = (torch.randn(1, 4, 64, 64, generator=torch.Generator().manual_seed(3)) * 30 + 500)
    mean, std = fn.mean_std(features.bfloat16())
    reference_mean, reference_std = fn.mean_std(features.bfloat16().float())
    assert mean.dtype == torch.float32
    assert torch.allclose(mean, reference_mean) and torch.allclose(std, reference_std)


@pytest.mark.parametrize("ring", [1, 2])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_statistics_of_a_map_inside_its_ring(ring, layout):
    torch.manual_seed(11)
    inner = torch.randn(2, 8, 13, 19) * 3 + 2
    ringed = torch.nn.functional.pad(inner, [ring] * 4, mode="reflect").contiguous(memory_format=layout)
    for got, expected in zip(fn.mean_std(ringed, ring=ring), fn.mean_std(inner)):
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)

"""The engine's convolution building blocks compute what the plain layers compute, borders included (the
engine built from them: tests/test_engine.py)."""

import pytest
import torch
import torch.nn.functional as F

from brushwork.engine import fastconv
from brushwork.engine.fastconv import conv, dense_of, exact_borders, grouped, phase_kernel, reflect_conv, regrouped
from brushwork.tiling import image_edges

CL = torch.channels_last


def plain_reflect_conv(x, weight, bias, stride=1, groups=1):
    padding = weight.shape[-1] // 2
    return F.conv2d(F.pad(x, [padding] * 4, mode="reflect"), weight, bias, stride=stride, groups=groups)


@pytest.mark.parametrize("kernel, stride, groups, channels", [
    (3, 1, 1, (16, 16)), (3, 2, 16, (16, 32)), (9, 1, 1, (16, 3)), (9, 1, 1, (3, 16)), (1, 1, 1, (32, 32)),
    (7, 1, 16, (16, 16)), (3, 2, 32, (32, 64))])
@pytest.mark.parametrize("size", [(40, 52), (37, 29), (12, 100)])
def test_reflect_conv_without_padded_copy_equals_the_padded_one(kernel, stride, groups, channels, size):
    torch.manual_seed(0)
    in_channels, out_channels = channels
    x = torch.randn(1, in_channels, *size).contiguous(memory_format=CL)
    weight = (torch.randn(out_channels, in_channels // groups, kernel, kernel) * 0.1).contiguous(memory_format=CL)
    bias = torch.randn(out_channels)
    with torch.inference_mode():
        expected = plain_reflect_conv(x, weight, bias, stride, groups)
        got = reflect_conv(x, weight, bias, stride=stride, groups=groups)
        assert got.shape == expected.shape
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(reflect_conv(x, weight, bias, stride=stride, groups=groups, relu=True),
                                   expected.relu(), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("layout", [CL, torch.contiguous_format])
def test_reflect_conv_adds_a_residual_everywhere_including_the_borders(layout):
    torch.manual_seed(1)
    x = torch.randn(1, 8, 33, 30).contiguous(memory_format=layout)
    weight = (torch.randn(8, 8, 3, 3) * 0.2).contiguous(memory_format=layout)
    bias = torch.randn(8)
    with torch.inference_mode():
        expected = x + plain_reflect_conv(x, weight, bias)
        torch.testing.assert_close(reflect_conv(x, weight, bias, residual=x), expected, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="either a residual or a ReLU"):
        conv(x, weight, bias, padding=1, relu=True, residual=x)


def test_exact_borders_only_touches_the_bands_the_fast_output_got_wrong():
    x = torch.arange(20 * 24, dtype=torch.float32).reshape(1, 1, 20, 24)
    out = torch.zeros_like(x)
    exact_borders(out, x, lambda piece: piece + 1, wrong=2, reach=1)
    assert torch.equal(out[..., :2, :], x[..., :2, :] + 1) and torch.equal(out[..., :, -2:], x[..., :, -2:] + 1)
    assert out[..., 2:-2, 2:-2].abs().sum() == 0


def test_exact_borders_leaves_the_sides_a_tile_cut():
    """Inside a tile (brushwork.tiling.image_edges) only the image's own borders are made exact: the other sides lie
    in the margin that tiling throws away."""
    x = torch.arange(20 * 24, dtype=torch.float32).reshape(1, 1, 20, 24)
    out = torch.zeros_like(x)
    with image_edges(top=True, bottom=False, left=False, right=True):
        exact_borders(out, x, lambda piece: piece + 1, wrong=2, reach=1)
    assert torch.equal(out[..., :2, :], x[..., :2, :] + 1) and torch.equal(out[..., :, -2:], x[..., :, -2:] + 1)
    assert out[..., 2:, :-2].abs().sum() == 0


@pytest.mark.parametrize("mode", ["bilinear", "bicubic", "nearest"])
def test_an_upsampling_and_a_convolution_are_one_convolution_on_phases(mode):
    torch.manual_seed(2)
    weight = torch.randn(6, 4, 3, 3, dtype=torch.float64)
    upsample = lambda x: F.interpolate(x, scale_factor=2, mode=mode)  # noqa: E731
    op = lambda x: F.conv2d(upsample(x), weight, padding=1)  # noqa: E731
    radius = 2 if mode == "bicubic" else 1
    kernel = phase_kernel(op, 4, radius, like=torch.zeros((), dtype=torch.float64))
    assert kernel.shape == (24, 4, 2 * radius + 1, 2 * radius + 1)
    x = torch.randn(1, 4, 20, 18, dtype=torch.float64)
    phases = F.pixel_shuffle(F.conv2d(x, kernel, padding=radius), 2)
    inside = (..., slice(8, -8), slice(8, -8))  # away from the borders, where padding differs
    torch.testing.assert_close(phases[inside], op(x)[inside], atol=1e-10, rtol=0)


def test_grouped_weights_round_trip_and_refuse_weights_that_mix_groups():
    weight = torch.randn(32, 2, 3, 3)
    dense = torch.zeros(32, 32, 3, 3)
    for group in range(16):  # each group: 2 channels in, 2 out
        dense[2 * group:2 * group + 2, 2 * group:2 * group + 2] = weight[2 * group:2 * group + 2]
    assert dense.shape == (32, 32, 3, 3) and torch.equal(grouped(dense, 16), weight)
    with pytest.raises(ValueError, match="mix channels"):
        grouped(torch.randn(32, 32, 3, 3), 16)


@pytest.mark.parametrize("in_channels, out_channels, groups, minimum, merged", [
    (16, 32, 16, 4, 4),    # the encoders' depthwise 3x3 with two outputs per channel: 4 groups of 4 -> 8
    (32, 64, 32, 4, 8),
    (64, 128, 32, 4, 16),  # the head's phase convolution, 2 -> 4 channels a group
    (6, 12, 6, 4, 2),      # 4 does not divide the groups: 3 at a time
    (32, 32, 32, 4, 32),   # depthwise, one input and one output a group: oneDNN's own kernels, unchanged
    (64, 64, 16, 4, 16),   # already 4 inputs a group
    (64, 32, 32, 8, 8),    # the head's upsampling convolution (two inputs, one output a group) on border strips
    (64, 64, 16, 8, 8),    # four inputs a group are too few on strips
])
def test_regrouped_weights_compute_the_same_convolution(in_channels, out_channels, groups, minimum, merged):
    torch.manual_seed(6)
    weight = torch.randn(out_channels, in_channels // groups, 3, 3, dtype=torch.float64)
    new_weight, new_groups = regrouped(weight, groups, minimum=minimum)
    assert new_groups == merged and new_weight.shape == (out_channels, in_channels // merged, 3, 3)
    x = torch.randn(1, in_channels, 13, 11, dtype=torch.float64)
    torch.testing.assert_close(F.conv2d(x, new_weight, padding=1, stride=2, groups=new_groups),
                               F.conv2d(x, weight, padding=1, stride=2, groups=groups), atol=1e-12, rtol=0)
    assert torch.equal(grouped(dense_of(weight, groups), groups), weight)


@pytest.mark.parametrize("batch, in_channels, out_channels, kernel, groups, size", [
    (1, 64, 64, 3, 64, (128, 128)),  # the modulator's depthwise convolution
    (2, 8, 4, 5, 2, (9, 13)),
    (1, 3, 6, 3, 1, (4, 4)),         # the smallest map reflection pads
    (1, 16, 16, 9, 4, (11, 30)),
])
@pytest.mark.parametrize("layout", [torch.contiguous_format, CL])
def test_the_mean_of_a_reflection_padded_convolution_without_the_convolution(batch, in_channels, out_channels,
                                                                             kernel, groups, size, layout):
    torch.manual_seed(8)
    x = torch.randn(batch, in_channels, *size, dtype=torch.float64)
    weight = torch.randn(out_channels, in_channels // groups, kernel, kernel, dtype=torch.float64)
    bias = torch.randn(out_channels, dtype=torch.float64)
    expected = plain_reflect_conv(x, weight, bias, groups=groups).mean(dim=(2, 3), keepdim=True)
    got = fastconv.mean_of_reflect_conv(x.contiguous(memory_format=layout), weight, bias, groups)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=1e-12, rtol=1e-12)


def test_the_mean_of_a_convolution_from_a_ringed_map():
    torch.manual_seed(9)
    x = torch.randn(2, 6, 17, 12, dtype=torch.float64).contiguous(memory_format=CL)
    weight, bias = torch.randn(6, 2, 3, 3, dtype=torch.float64), torch.randn(6, dtype=torch.float64)
    torch.testing.assert_close(fastconv.mean_of_reflect_conv(fastconv.with_ring(x), weight, bias, 3, ringed=True),
                               fastconv.mean_of_reflect_conv(x, weight, bias, 3), atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_a_chain_of_convolutions_on_ringed_maps_is_the_reflection_padded_chain(dtype):
    """Each convolution with zero padding on the ringed map, then the ring refreshed: the inside is what
    reflection-padded convolutions give, with ReLUs and residual additions (fused by oneDNN in float32)."""
    torch.manual_seed(10)
    x = torch.randn(1, 16, 23, 30, dtype=dtype).contiguous(memory_format=CL)
    layers = [(torch.randn(16, 16, k, k, dtype=dtype).contiguous(memory_format=CL), torch.randn(16, dtype=dtype))
              for k in (3, 1, 3)]
    expected = F.relu(plain_reflect_conv(x, *layers[0]))
    expected = F.relu(plain_reflect_conv(expected, *layers[1]))
    expected = plain_reflect_conv(expected, *layers[2]) + x
    ringed = fastconv.with_ring(x)
    assert ringed.shape[-2:] == (25, 32) and ringed.is_contiguous(memory_format=CL)
    torch.testing.assert_close(fastconv.inside(ringed), x, atol=0, rtol=0)
    hidden = fastconv.ring_conv(ringed, *layers[0], relu=True)
    hidden = fastconv.ring_conv(hidden, *layers[1], relu=True)
    out = fastconv.ring_conv(hidden, *layers[2], residual=ringed)
    tolerance = 1e-12 if dtype == torch.float64 else 1e-4
    torch.testing.assert_close(fastconv.inside(out), expected, atol=tolerance, rtol=tolerance)
    torch.testing.assert_close(out, fastconv.with_ring(fastconv.inside(out)), atol=0, rtol=0)  # a valid ring
    with pytest.raises(ValueError, match="ring of 1 pixels"):
        fastconv.ring_conv(ringed, torch.zeros(16, 16, 5, 5, dtype=dtype), None)


def test_the_mean_of_a_convolution_refuses_maps_too_small_to_pad():
    with pytest.raises(ValueError, match="smaller than the map"):
        fastconv.mean_of_reflect_conv(torch.zeros(1, 2, 3, 8), torch.zeros(2, 2, 9, 9), None)
    with pytest.raises(ValueError, match="ring"):
        fastconv.mean_of_reflect_conv(torch.zeros(1, 2, 13, 8), torch.zeros(2, 2, 5, 5), None, ringed=True)

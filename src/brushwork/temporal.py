"""Temporal consistency for video: optical flow between input frames, the previous output carried along it, and
the warping error that measures flicker.

A painted frame flickers when it differs from the previous one more than the motion explains. Both the filter
and the metric rest on one estimate of that motion (:func:`estimate_motion`): OpenCV's DIS optical flow between
consecutive *input* frames, backward (where each pixel of the new frame was) and forward, at a reduced resolution,
and a mask of where it can be trusted: not where the two flows disagree (occlusion, disocclusion), not where a
pixel came from outside the frame, and not where the input moved along the flow does not match the new input.
The flow filter (:func:`follow_motion`) blends each painted frame with the previous output moved along the flow,
where the mask trusts it; the warping error (:class:`WarpingMeter`) is the mean absolute difference between a
frame and the earlier one moved along the flow, where the mask trusts it.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .errors import BrushworkError

#: ``none`` paints every frame alone; ``blend`` mixes in the previous output where the picture is still; ``flow``
#: mixes in the previous output moved along the optical flow, wherever the flow is reliable.
TEMPORAL_MODES = ("none", "blend", "flow")
#: The default mode and strength, chosen by measurement (docs/BENCHMARKS.md, Flow-guided video).
DEFAULT_TEMPORAL = "flow"
DEFAULT_STRENGTH = 0.8
#: The flow is estimated on frames scaled down so that their shorter side is at most this many pixels. Measured
#: on a 1280x720 hand-held clip (docs/BENCHMARKS.md, Flow-guided video): the flow filter's warping error is 2.84
#: with flow at 360 px, 2.86 at 540 px and 2.95 at full size (the noise hurts more there), 3.09 at 180 px; the
#: flow at 360 px costs a quarter of the full size's.
FLOW_SIDE = 360
#: Frames this many apart make the long-term warping error.
LONG_TERM_GAP = 10

#: Blend (no flow): the content change (mean absolute difference over RGB, in [0, 1]) at which it stops, so that
#: pixels whose content changed this much or more take the new painted frame as it is. Measured on a 96x64 clip
#: (docs/BENCHMARKS.md, Video): 8 levels removes about 60 % of the flicker of still areas and costs moving ones
#: about 1 dB of PSNR to the frame painted alone.
SMOOTH_CHANGE_LIMIT = 8 / 255
#: Sides, in pixels, of the windows over which the content change is averaged (noise) and then maximised
#: (motion): see temporal_blend.
NOISE_WINDOW = 5
MOTION_WINDOW = 15

#: Forward-backward consistency (Sundaram et al. 2010, as in Ruder et al. 2016): a pixel is occluded or
#: disoccluded where ``|b + f|^2 > FLOW_AGREEMENT * (|b|^2 + |f|^2) + FLOW_TOLERANCE`` (pixels of the flow's
#: resolution), ``b`` its backward flow and ``f`` the forward flow where ``b`` points.
FLOW_AGREEMENT = 0.01
FLOW_TOLERANCE = 0.5
#: Where the earlier input moved along the flow differs from the later one by this much (mean over RGB of the
#: locally averaged difference, in [0, 1]) the flow is not trusted at all; by half of it or less, fully.
MATCH_LIMIT = 8 / 255
#: The flow filter's contrast: the window, in pixels, of the local contrast it keeps, and the most it raises it.
CONTRAST_WINDOW = 9
MAX_CONTRAST_GAIN = 2.0
#: A pair of frames of which the flow can follow less than this share is a scene cut: the flow filter starts
#: afresh, and the warping error skips the pair.
CUT_SHARE = 0.3
#: DIS's "medium" preset: at 360 px its flow is off by 0.10 px on the clip above, "fast"'s by 0.15 px (the flow
#: filter's warping error 2.84 against 3.14), for a few tens of milliseconds a frame.
DIS_PRESET = "medium"


@dataclass(frozen=True)
class FlowFrame:
    """An input frame, with what the flow is estimated from."""

    #: 1x3xHxW float32 in [0, 1].
    image: torch.Tensor
    #: The frame at the flow's resolution: 3xhxw float32 in [0, 1] (numpy, for OpenCV) and its luma as uint8.
    small: np.ndarray
    gray: np.ndarray


@dataclass(frozen=True)
class Motion:
    """How a later frame relates to an earlier one."""

    #: HxWx2 float32: for each pixel (x, y) of the later frame, the position in the earlier frame it came from.
    map: np.ndarray
    #: 1x1xHxW float32 in [0, 1]: how far that position can be trusted.
    reliable: torch.Tensor

    @property
    def share(self) -> float:
        """The part of the later frame that the motion follows."""
        return float(self.reliable.mean())

    @property
    def cut(self) -> bool:
        return self.share < CUT_SHARE


def flow_frame(image: torch.Tensor, flow_side: int | None = FLOW_SIDE) -> FlowFrame:
    """Prepare a 1x3xHxW frame in [0, 1] for :func:`estimate_motion`: scaled down (with antialiasing) so that its
    shorter side is at most ``flow_side`` pixels (None: full resolution)."""
    height, width = image.shape[-2:]
    scale = min(1.0, flow_side / min(height, width)) if flow_side else 1.0
    small = image.float()
    if scale < 1.0:
        size = (max(8, round(height * scale)), max(8, round(width * scale)))
        small = F.interpolate(small, size=size, mode="bilinear", antialias=True, align_corners=False)
    small = small[0].clamp(0, 1).contiguous().numpy()
    return FlowFrame(image, small, np.rint(_luma(small) * 255).astype(np.uint8))


def estimate_motion(earlier: FlowFrame, later: FlowFrame) -> Motion:
    """The motion from ``earlier`` to ``later`` (frames of one size): DIS optical flow both ways at the frames'
    flow resolution, a reliability mask there, both scaled up to the full frame."""
    if earlier.image.shape != later.image.shape or earlier.gray.shape != later.gray.shape:
        raise BrushworkError("motion is estimated between frames of one size")
    dis = _dis()
    backward = dis.calc(later.gray, earlier.gray, None)  # later -> earlier
    forward = dis.calc(earlier.gray, later.gray, None)  # earlier -> later
    height, width = later.gray.shape
    grid = _grid(height, width)
    position = grid + backward
    forward_there = _remap(forward, position)
    bx, by, fx, fy = backward[..., 0], backward[..., 1], forward_there[..., 0], forward_there[..., 1]
    mismatch = np.square(bx + fx) + np.square(by + fy)
    agree = mismatch <= FLOW_AGREEMENT * (bx * bx + by * by + fx * fx + fy * fy) + FLOW_TOLERANCE
    inside = ((position[..., 0] >= 0) & (position[..., 0] <= width - 1)
              & (position[..., 1] >= 0) & (position[..., 1] <= height - 1))
    # The earlier input moved along the flow against the later one: averaged over 3x3 before the absolute value,
    # so that noise cancels and a wrong flow (a shifted edge) does not.
    difference = np.stack([_remap(plane, position) for plane in earlier.small]) - later.small
    difference = np.abs(np.stack([_box(plane, 3) for plane in difference])).mean(axis=0)
    match = np.clip((MATCH_LIMIT - difference) / (MATCH_LIMIT / 2), 0.0, 1.0)
    reliable = (agree & inside) * match

    full_height, full_width = later.image.shape[-2:]
    if (full_height, full_width) != (height, width):
        import cv2

        backward = cv2.resize(backward, (full_width, full_height), interpolation=cv2.INTER_LINEAR)
        backward *= np.array([full_width / width, full_height / height], dtype=np.float32)
        reliable = cv2.resize(reliable.astype(np.float32), (full_width, full_height), interpolation=cv2.INTER_LINEAR)
    return Motion(_grid(full_height, full_width) + backward,
                  torch.from_numpy(np.ascontiguousarray(reliable, dtype=np.float32))[None, None])


def warp(image: torch.Tensor, motion: Motion, *, cubic: bool = False) -> torch.Tensor:
    """An earlier 1xCxHxW frame moved to the later frame's positions (bilinear, or bicubic; float32 out)."""
    planes = image[0].float().numpy()
    return torch.from_numpy(np.stack([_remap(plane, motion.map, cubic) for plane in planes]))[None]


def follow_motion(painted: torch.Tensor, previous: torch.Tensor, motion: Motion, strength: float) -> torch.Tensor:
    """Blend a painted frame towards the previous output moved along the motion, by ``strength`` where the motion
    is reliable and not at all where it is not, keeping the painted frame's contrast (1x3xHxW tensors in [0, 1]).

    Run over a sequence this is an exponential moving average of the painted frames along the motion's paths,
    which restarts where something comes into view, so the painting sticks to what it paints. Two things keep
    it from washing the painting out: the previous output is moved bicubically (bilinear moves, repeated frame
    after frame, blur it), and the blend's local contrast is brought back to the painted frame's
    (:func:`keep_contrast`): averaging brush strokes that differ slightly from frame to frame flattens them.
    """
    current = painted[0].float().numpy()
    moved = warp(previous, motion, cubic=True)[0].numpy().clip(0, 1)
    blended = current + (moved - current) * (strength * motion.reliable[0, 0].numpy())
    return keep_contrast(torch.from_numpy(blended)[None], painted)


def keep_contrast(image: torch.Tensor, reference: torch.Tensor, window: int = CONTRAST_WINDOW) -> torch.Tensor:
    """``image`` with its local contrast raised to ``reference``'s where it is lower (1x3xHxW in [0, 1]).

    Local contrast: the standard deviation of the luma over ``window`` x ``window`` pixels. Where ``image`` has
    less, its deviations from its local mean (in each channel) are scaled up, by at most ``MAX_CONTRAST_GAIN``; its
    local mean (the colours, the light) stays.
    """
    def variance(luma: np.ndarray) -> np.ndarray:
        mean = _box(luma, window)
        return _box(luma * luma, window) - mean * mean

    planes, reference_planes = image[0].float().contiguous().numpy(), reference[0].float().contiguous().numpy()
    gain = np.sqrt(variance(_luma(reference_planes)) / np.maximum(variance(_luma(planes)), 1e-6))
    np.clip(gain, 1.0, MAX_CONTRAST_GAIN, out=gain)
    means = [_box(plane, window) for plane in planes]
    return torch.from_numpy(np.stack([np.clip((plane - mean) * gain + mean, 0, 1)
                                      for plane, mean in zip(planes, means)]))[None]


def temporal_blend(painted: torch.Tensor, previous: torch.Tensor, content: torch.Tensor,
                   previous_content: torch.Tensor, strength: float) -> torch.Tensor:
    """Blend a painted frame towards the previous output, by ``strength`` where the content stayed still and
    not at all where it changed by ``SMOOTH_CHANGE_LIMIT`` or more (1x3xHxW tensors in [0, 1]).

    Run over a sequence this is an exponential moving average of the painted frames that restarts wherever
    the picture moves, which removes the flicker of still areas without trails behind motion. The content's
    change is averaged over a small window first (so that sensor noise does not count as motion), then spread
    to its maximum over a larger one (so that the flat inside of a moving object, which barely changes from
    frame to frame, moves with its edges).
    """
    change = (content - previous_content).abs().mean(dim=1, keepdim=True)
    change = F.avg_pool2d(change, NOISE_WINDOW, stride=1, padding=NOISE_WINDOW // 2, count_include_pad=False)
    for window in ((MOTION_WINDOW, 1), (1, MOTION_WINDOW)):  # a square maximum, in two cheaper passes
        change = F.max_pool2d(change, window, stride=1, padding=(window[0] // 2, window[1] // 2))
    weight = strength * (1.0 - change / SMOOTH_CHANGE_LIMIT).clamp(0.0, 1.0)
    return torch.lerp(painted, previous, weight)


class TemporalFilter:
    """One temporal setting applied to a clip's painted frames in order; it keeps the previous frame only."""

    def __init__(self, mode: str = DEFAULT_TEMPORAL, strength: float = DEFAULT_STRENGTH):
        check_temporal(mode, strength)
        self.mode, self.strength = mode, strength
        self.cuts = 0
        self._previous: tuple[torch.Tensor, torch.Tensor] | None = None  # (content, output)

    @property
    def needs_motion(self) -> bool:
        return self.mode == "flow" and self.strength > 0

    def __call__(self, painted: torch.Tensor, content: torch.Tensor, motion: Motion | None = None) -> torch.Tensor:
        """The output for a painted frame of ``content``; ``motion`` from the previous content to this one (flow
        mode; None: start afresh)."""
        output = painted
        if self._previous is not None and self._previous[0].shape == content.shape and self.strength:
            previous_content, previous_output = self._previous
            if self.mode == "blend":
                output = temporal_blend(painted, previous_output, content, previous_content, self.strength)
            elif self.mode == "flow" and motion is not None:
                if motion.cut:
                    self.cuts += 1
                else:
                    output = follow_motion(painted, previous_output, motion, self.strength)
        self._previous = (content, output)
        return output


def check_temporal(mode: str, strength: float) -> None:
    if mode not in TEMPORAL_MODES:
        raise BrushworkError(f"unknown temporal mode {mode!r}; choose from {', '.join(TEMPORAL_MODES)}")
    if not 0.0 <= strength < 1.0:
        raise BrushworkError(f"the temporal strength (smoothing) must be at least 0 and below 1, not {strength}")


@dataclass
class WarpingErrors:
    """Warping errors (mean absolute difference, 0-255 levels, over RGB and the reliable pixels) of a painted clip
    and of its input, averaged over pairs of frames: short-term (consecutive) and long-term (``gap`` apart).

    The input's own error is the floor: noise and what the flow cannot follow. Pairs across a scene cut are left
    out. ``per_frame`` holds each frame's short-term (output, input) errors (nan: the first frame, or a cut).
    """

    short_term: float
    long_term: float
    input_short_term: float
    input_long_term: float
    gap: int
    short_pairs: int
    long_pairs: int
    cuts: int
    per_frame: list[tuple[float, float]] = field(default_factory=list)


def warping_error(earlier: torch.Tensor, later: torch.Tensor, motion: Motion) -> float:
    """Mean absolute difference (0-255 levels) between ``later`` and ``earlier`` moved along ``motion``, over RGB,
    weighted by the motion's reliability (1x3xHxW frames, float in [0, 1] or uint8)."""
    scale = 1.0 if later.dtype == torch.uint8 else 255.0
    difference = np.abs(later[0].float().numpy() - warp(earlier, motion)[0].numpy()).mean(axis=0)
    weight = motion.reliable[0, 0].numpy()
    total = float(weight.sum())
    return float(np.vdot(difference, weight)) / total * scale if total else math.nan


class WarpingMeter:
    """Measures the warping errors of a clip's outputs (one or several, painted from the same input) as the frames
    come, keeping two earlier frames at most.

    Short-term pairs are consecutive frames, measured with the motion the painting used (:func:`estimate_motion`
    unless ``known_motion`` gives it: a synthetic clip's exact motion, ``known_motion(earlier, later)`` by frame
    index). Long-term pairs are frames ``gap`` apart, starting afresh after each scene cut: frames 0 and gap, gap
    and 2 gap, and so on, so that memory does not grow with ``gap``. The input's own errors are measured once for
    all ``outputs``.
    """

    def __init__(self, gap: int = LONG_TERM_GAP, known_motion: Callable[[int, int], Motion] | None = None,
                 outputs: int = 1):
        if gap < 1:
            raise BrushworkError(f"the long-term gap must be at least 1 frame, not {gap}")
        self.gap, self.known_motion, self.outputs = gap, known_motion, outputs
        self.frames = self.cuts = 0
        # Per term: the sums of each output's errors, the input's, and the pairs measured.
        self._sums = {term: [[0.0] * outputs, 0.0, 0] for term in ("short", "long")}
        self._per_frame: list[tuple[list[float], float]] = []
        self._previous: tuple | None = None  # (index, frame, outputs)
        self._anchor: tuple | None = None

    def add(self, frame: FlowFrame, outputs: torch.Tensor | Sequence[torch.Tensor],
            motion: Motion | None = None) -> None:
        """The next input frame, its 1x3xHxW output(s) (as written: uint8, or float in [0, 1]), and the motion from
        the previous input frame (estimated here when not given)."""
        outputs = [outputs] if isinstance(outputs, torch.Tensor) else list(outputs)
        if len(outputs) != self.outputs:
            raise BrushworkError(f"this meter measures {self.outputs} output(s) a frame, not {len(outputs)}")
        index = self.frames
        self.frames += 1
        current = (index, frame, outputs)
        errors: tuple[list[float], float] = ([math.nan] * self.outputs, math.nan)
        if self._previous is not None and self._previous[1].image.shape == frame.image.shape:
            motion = self._motion(self._previous, current, motion)
            if motion.cut:
                self.cuts += 1
                self._anchor = None
            else:
                errors = self._measure("short", self._previous, current, motion)
        else:
            self._anchor = None
        self._per_frame.append(errors)
        if self._anchor is None:
            self._anchor = current
        elif index - self._anchor[0] == self.gap:
            motion = self._motion(self._anchor, current)
            if not motion.cut:
                self._measure("long", self._anchor, current, motion)
            self._anchor = current
        self._previous = current

    def result(self, output: int = 0) -> WarpingErrors:
        """The errors of output number ``output`` and the input's."""
        def mean(term: str, total: float) -> float:
            pairs = self._sums[term][2]
            return total / pairs if pairs else math.nan

        short, long = self._sums["short"], self._sums["long"]
        return WarpingErrors(mean("short", short[0][output]), mean("long", long[0][output]),
                             mean("short", short[1]), mean("long", long[1]), self.gap, short[2], long[2], self.cuts,
                             [(outputs[output], input_error) for outputs, input_error in self._per_frame])

    def _motion(self, earlier: tuple, later: tuple, given: Motion | None = None) -> Motion:
        if self.known_motion is not None:
            return self.known_motion(earlier[0], later[0])
        return given if given is not None else estimate_motion(earlier[1], later[1])

    def _measure(self, term: str, earlier: tuple, later: tuple, motion: Motion) -> tuple[list[float], float]:
        input_error = warping_error(earlier[1].image, later[1].image, motion)
        output_errors = [warping_error(before, after, motion) for before, after in zip(earlier[2], later[2])]
        if not math.isnan(input_error):  # nan: nothing reliable to measure on
            sums = self._sums[term]
            for number, error in enumerate(output_errors):
                sums[0][number] += error
            sums[1] += input_error
            sums[2] += 1
        return output_errors, input_error


_local = threading.local()


def _dis():
    """One DIS optical flow object per thread (OpenCV's objects keep buffers between calls)."""
    if not hasattr(_local, "dis"):
        import cv2

        preset = {"ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST, "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
                  "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM}[DIS_PRESET]
        _local.dis = cv2.DISOpticalFlow_create(preset)
    return _local.dis


def _luma(planes: np.ndarray) -> np.ndarray:
    """BT.601 luma of 3xHxW RGB planes."""
    return 0.299 * planes[0] + 0.587 * planes[1] + 0.114 * planes[2]


def _grid(height: int, width: int) -> np.ndarray:
    """HxWx2 float32 pixel positions (x, y)."""
    x = np.arange(width, dtype=np.float32)
    y = np.arange(height, dtype=np.float32)
    return np.stack(np.broadcast_arrays(x[None, :], y[:, None]), axis=2)


def _remap(values: np.ndarray, position: np.ndarray, cubic: bool = False) -> np.ndarray:
    """``values`` (HxW or HxWxC float32) read at ``position`` (HxWx2), bilinear or bicubic, edges extended."""
    import cv2

    return cv2.remap(np.ascontiguousarray(values, dtype=np.float32), position, None,
                     cv2.INTER_CUBIC if cubic else cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def _box(plane: np.ndarray, window: int) -> np.ndarray:
    import cv2

    return cv2.blur(plane, (window, window), borderType=cv2.BORDER_REPLICATE)

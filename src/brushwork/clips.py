"""Synthetic clips with exactly known motion: a virtual camera moving over a photo (pan, zoom, a hand-held path),
with sensor-like noise. Their motion is known to the pixel, so a warping error measured with it is independent of
any flow estimate.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from PIL import Image

from .errors import BrushworkError
from .images import ImageLike, as_image
from .temporal import Motion

#: The kinds of camera motion, with what they do.
MOTIONS = {
    "pan": "the camera moves sideways, STEP pixels a frame",
    "zoom": "the camera zooms in about the frame's centre, by STEP per cent a frame",
    "handheld": "a hand-held camera: smooth random drift (about STEP pixels a frame), slight zoom and roll",
}
#: Default steps of each motion.
STEPS = {"pan": 3.0, "zoom": 1.0, "handheld": 3.0}


@dataclass(frozen=True)
class SyntheticClip:
    """``cameras[t]`` maps pixel positions (x, y, 1) of frame t to positions in ``photo``; frames are rendered
    bilinearly (a whole-pixel pan is an exact crop), then get Gaussian noise of ``noise`` levels (0-255) and are
    rounded to 8 bits, as a camera's would be."""

    name: str
    photo: np.ndarray  # HxWx3 float32, 0-255
    cameras: tuple[np.ndarray, ...]  # 2x3 float64 each
    width: int
    height: int
    noise: float = 3.0
    seed: int = 0

    def __len__(self) -> int:
        return len(self.cameras)

    def frames(self) -> Iterator[Image.Image]:
        import cv2

        rng = np.random.default_rng(self.seed)
        for camera in self.cameras:
            frame = cv2.warpAffine(self.photo, camera.astype(np.float32), (self.width, self.height),
                                   flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REFLECT)
            if self.noise:
                frame = frame + rng.normal(0.0, self.noise, frame.shape).astype(np.float32)
            yield Image.fromarray(np.clip(np.rint(frame), 0, 255).astype(np.uint8), "RGB")

    def motion(self, earlier: int, later: int) -> Motion:
        """The exact motion from frame ``earlier`` to frame ``later``: where each pixel of the later frame is in the
        earlier one; reliable (1) where that lies inside the earlier frame, 0 elsewhere."""
        to_earlier = np.linalg.inv(_square(self.cameras[earlier])) @ _square(self.cameras[later])
        x, y = np.meshgrid(np.arange(self.width, dtype=np.float64), np.arange(self.height, dtype=np.float64))
        position = np.stack([to_earlier[0, 0] * x + to_earlier[0, 1] * y + to_earlier[0, 2],
                             to_earlier[1, 0] * x + to_earlier[1, 1] * y + to_earlier[1, 2]], axis=2)
        inside = ((position[..., 0] >= 0) & (position[..., 0] <= self.width - 1)
                  & (position[..., 1] >= 0) & (position[..., 1] <= self.height - 1))
        return Motion(position.astype(np.float32), torch.from_numpy(inside.astype(np.float32))[None, None])


def synthetic_clip(motion: str, photo: ImageLike = "sample:astronaut", *, width: int = 640, height: int = 360,
                   frames: int = 48, step: float | None = None, noise: float = 3.0, seed: int = 0) -> SyntheticClip:
    """A clip of ``frames`` frames of ``width`` x ``height`` over ``photo`` (scaled so that the camera stays inside
    it), moving by ``motion`` (see :data:`MOTIONS`) with ``step`` (default :data:`STEPS`), noise of ``noise``
    levels (sigma, 0-255)."""
    if motion not in MOTIONS:
        raise BrushworkError(f"unknown motion {motion!r}; choose from {', '.join(MOTIONS)}")
    if frames < 1 or width < 8 or height < 8:
        raise BrushworkError("a synthetic clip needs at least one frame of at least 8x8 pixels")
    step = STEPS[motion] if step is None else step
    paths = _paths(motion, step, frames, width, height, seed)
    # Where the frames' corners fall, in the first frame's coordinates: the photo is scaled to cover all of it.
    corners = np.array([[0, 0, 1], [width - 1, 0, 1], [0, height - 1, 1], [width - 1, height - 1, 1]], float).T
    reached = np.concatenate([path @ corners for path in paths], axis=1)
    low, high = reached.min(axis=1), reached.max(axis=1)
    image = as_image(photo)
    scale = max((high[0] - low[0] + 2) / image.width, (high[1] - low[1] + 2) / image.height)
    size = (math.ceil(image.width * scale), math.ceil(image.height * scale))
    scaled = np.asarray(image.resize(size, Image.Resampling.LANCZOS) if size != image.size else image, np.float32)
    # Whole-pixel offsets, centred: a whole-pixel pan stays an exact crop.
    offset = np.floor((np.array(size) - 1 - (high + low)) / 2)
    cameras = tuple(np.array([[1, 0, offset[0]], [0, 1, offset[1]]]) @ _square(path) for path in paths)
    return SyntheticClip(motion, np.ascontiguousarray(scaled), cameras, width, height, noise, seed)


def write_clip(clip: SyntheticClip, path: str | os.PathLike, *, rate: int = 25, crf: int = 12) -> Path:
    """Write the clip as H.264 (yuv420p) video, to paint it with ``brushwork video``."""
    import av

    path = Path(path)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(rate))
        stream.width, stream.height, stream.pix_fmt = clip.width, clip.height, "yuv420p"
        stream.codec_context.options = {"crf": str(crf)}
        for index, frame in enumerate(clip.frames()):
            video_frame = av.VideoFrame.from_image(frame)
            video_frame.pts = index
            container.mux(stream.encode(video_frame))
        container.mux(stream.encode(None))
    return path


def _paths(motion: str, step: float, frames: int, width: int, height: int, seed: int) -> list[np.ndarray]:
    """2x3 maps from each frame's pixels to the first frame's."""
    centre = np.array([(width - 1) / 2, (height - 1) / 2])
    if motion == "pan":
        return [np.array([[1, 0, step * t], [0, 1, 0]], float) for t in range(frames)]
    if motion == "zoom":
        return [_about(centre, (1 + step / 100) ** -t, 0.0, (0.0, 0.0)) for t in range(frames)]
    # Hand-held: sums of a few slow sines with random phases; the drift's speed is about `step` px a frame.
    rng = np.random.default_rng(seed)
    t = np.arange(frames, dtype=float)

    def wander(amplitude: float) -> np.ndarray:
        periods, phases = rng.uniform(12, 48, 3), rng.uniform(0, 2 * np.pi, 3)
        return sum(amplitude * periods[k] / (2 * np.pi) * np.sin(2 * np.pi * t / periods[k] + phases[k])
                   for k in range(3)) / 3

    shift_x = wander(step) + step / 2 * t  # a slow pan under the drift
    shift_y = wander(step * 0.6)
    zoom = 1 + 0.02 * np.sin(2 * np.pi * t / max(frames, 2) + rng.uniform(0, 2 * np.pi))
    roll = np.radians(1.0) * np.sin(2 * np.pi * t / 40 + rng.uniform(0, 2 * np.pi))
    paths = [_about(centre, 1 / zoom[k], roll[k], (shift_x[k], shift_y[k])) for k in range(frames)]
    first = np.linalg.inv(_square(paths[0]))
    return [(first @ _square(path))[:2] for path in paths]


def _about(centre: np.ndarray, scale: float, angle: float, shift: tuple[float, float]) -> np.ndarray:
    """Scale and rotate about ``centre``, then shift: a 2x3 map."""
    rotation = scale * np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    return np.concatenate([rotation, (centre - rotation @ centre + np.array(shift))[:, None]], axis=1)


def _square(affine: np.ndarray) -> np.ndarray:
    return np.vstack([affine, [0.0, 0.0, 1.0]])

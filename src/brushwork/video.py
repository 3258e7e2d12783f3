"""Video in, video out: every frame painted by one :class:`~brushwork.api.Stylizer` (the style signals are
computed once), made consistent over time (:mod:`brushwork.temporal`), the sound kept, the file written
atomically. Decoding and encoding go through PyAV, which ships its own FFmpeg libraries.
"""

from __future__ import annotations

import os
import secrets
import sys
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Sequence, Union

import torch
from PIL import Image
from tqdm import tqdm

from .api import StyleInput, Stylizer
from .errors import BrushworkError
from .images import resize, to_image, to_tensor
from .temporal import (DEFAULT_STRENGTH, DEFAULT_TEMPORAL, FLOW_SIDE, LONG_TERM_GAP, FlowFrame, Motion,
                       TemporalFilter, WarpingErrors, WarpingMeter, check_temporal, estimate_motion, flow_frame)

if TYPE_CHECKING:
    import av

#: x264's constant rate factor: 0 is lossless, 51 the worst; 18 is about visually lossless.
DEFAULT_CRF = 18
#: FFmpeg demuxers that read still images: such inputs are images, not videos.
_IMAGE_FORMATS = ("image2", "_pipe")

VideoSource = Union[str, os.PathLike, BinaryIO]


@dataclass
class VideoReport:
    """What ``stylize_video`` wrote and how fast."""

    output: Path
    frames: int
    width: int
    height: int
    seconds: float
    #: "copied" (remuxed unchanged), "re-encoded" (to AAC, where the container cannot hold the original codec)
    #: or "none" (the input has no sound).
    audio: str
    #: Mean absolute difference between consecutive painted frames (0-255 levels, before encoding): flicker
    #: plus true motion; smoothing lowers it.
    frame_change: float
    #: The temporal mode and its strength.
    temporal: str = "none"
    strength: float = 0.0
    #: The output's warping errors and the input's own (None: not measured).
    warping: WarpingErrors | None = None

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds else 0.0


class VideoInterrupted(KeyboardInterrupt):
    """Ctrl-C during ``stylize_video``: the output was not written; ``frames`` were painted before."""

    def __init__(self, frames: int):
        super().__init__(frames)
        self.frames = frames


def stylize_video(input: VideoSource, styles: StyleInput | None, output: str | os.PathLike, *,
                  stylizer: Stylizer | None = None, temporal: str = DEFAULT_TEMPORAL,
                  smooth: float = DEFAULT_STRENGTH, flow_size: int | None = FLOW_SIDE, measure: bool = True,
                  long_term_gap: int = LONG_TERM_GAP, max_frames: int | None = None, crf: int = DEFAULT_CRF,
                  progress: bool = True) -> VideoReport:
    """Paint every frame of a video with ``stylizer`` (default: MicroAST with its defaults) and write it to
    ``output``: H.264 (yuv420p, BT.709) in the container the extension names (.mp4, .mkv, .mov, ...).

    The frame rate and timestamps are the input's. ``stylizer.content_size`` resizes the frames; an odd width
    or height loses its last pixel column or row (yuv420p needs even sizes). Audio streams are copied
    unchanged where the container can hold them, else re-encoded to AAC. A per-style model (johnson) takes no
    ``styles`` (None or []).

    ``temporal`` keeps the painting steady from frame to frame, by ``smooth`` (0 to <1, the weight of the past):
    ``"flow"`` (the default) blends each painted frame with the previous output moved along the optical flow of
    the input, wherever the flow is reliable, and starts afresh at scene cuts; ``"blend"`` blends with the
    previous output where the picture is still only; ``"none"`` paints each frame alone. The flow is estimated
    on frames scaled to ``flow_size`` pixels on their shorter side (None: full size). ``measure`` reports the
    output's warping errors and the input's own (``report.warping``): short-term between consecutive frames,
    long-term between frames ``long_term_gap`` apart (see :class:`brushwork.temporal.WarpingMeter`).

    ``max_frames`` paints only the first frames (and keeps the sound up to there), for previews. ``crf`` is
    x264's quality (lower: better, bigger). ``progress`` shows a progress bar on stderr.

    The output is written to a temporary file beside it and renamed at the end: a failed or interrupted run
    leaves whatever was there before. Ctrl-C raises :class:`VideoInterrupted`. Each style is encoded once (the
    stylizer remembers paths and ``sample:NAME`` by name, images and arrays by their pixels). Memory does not
    grow with the video's length: the temporal filter and the measurement keep two earlier frames at most.
    """
    check_temporal(temporal, smooth)
    if flow_size is not None and flow_size < 8:
        raise BrushworkError(f"the flow size must be at least 8 pixels, not {flow_size}")
    if long_term_gap < 1:
        raise BrushworkError(f"the long-term gap must be at least 1 frame, not {long_term_gap}")
    if max_frames is not None and max_frames < 1:
        raise BrushworkError(f"max frames must be at least 1, not {max_frames}")
    if not 0 <= crf <= 51:
        raise BrushworkError(f"crf must be between 0 and 51, not {crf}")
    stylizer = stylizer if stylizer is not None else Stylizer()
    if stylizer.method == "gatys":
        raise BrushworkError("video needs a feed-forward method (microast, adain, johnson or vst): gatys optimises "
                             "each frame for minutes")
    styles = _check_styles(stylizer, styles)
    import av  # FFmpeg's libraries load with the first video, not with brushwork

    output = Path(output)
    start = time.perf_counter()
    with _open_video(input) as source:
        video = source.streams.video[0]
        video.thread_type = "AUTO"
        end_time = _end_time(video, max_frames)
        temporary = _temporary_path(output)
        painter = FramePainter(stylizer, styles, [TemporalFilter(temporal, smooth)], flow=measure,
                               flow_size=flow_size)
        meter = WarpingMeter(long_term_gap) if measure else None
        try:
            with _Writer(temporary, output, video, source.streams.audio, crf) as writer, \
                    tqdm(total=_frame_count(source, video, max_frames), desc="stylising", unit="frame",
                         file=sys.stderr, disable=not progress) as bar:
                for frame in _frames(source, video, writer, end_time, max_frames):
                    painted = painter(frame.to_image())
                    writer.write_video(painted.outputs[0], frame)
                    if meter is not None:
                        meter.add(painted.content, painted.written[0], painted.motion)
                    bar.update()
                if painter.frames == 0:
                    raise BrushworkError(f"{_label(input)}: no video frame could be decoded")
                writer.finish()
            os.replace(temporary, output)
        except KeyboardInterrupt:
            temporary.unlink(missing_ok=True)
            raise VideoInterrupted(painter.frames) from None
        except av.error.FFmpegError as error:
            temporary.unlink(missing_ok=True)
            raise BrushworkError(f"{_label(input)} -> {output}: FFmpeg failed after {painter.frames} frame(s) "
                                 f"({error.strerror})") from None
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
    return VideoReport(output, painter.frames, writer.width, writer.height, time.perf_counter() - start,
                       writer.audio_mode, painter.mean_change(0), temporal, smooth,
                       meter.result() if meter is not None else None)


@dataclass
class PaintedFrame:
    """One input frame painted, through each temporal filter."""

    #: The (resized, even) input frame, ready for flow (None when nothing needs the flow).
    content: FlowFrame | None
    #: The motion from the previous input frame (None: the first frame, a change of size, or no flow needed).
    motion: Motion | None
    #: One output per filter, as written (8 bits), and the same as 1x3xHxW tensors.
    outputs: list[Image.Image]
    written: list[torch.Tensor]


class FramePainter:
    """A clip's frames in order in, painted frames out (even sizes), through one or more temporal filters.

    Each frame is painted once, and the flow between input frames is estimated once, whatever the number of
    filters: an evaluation compares its settings on one painting. ``flow`` estimates the flow even when no filter
    needs it (to measure). Only the previous frame is kept.
    """

    def __init__(self, stylizer: Stylizer, styles: StyleInput | None, filters: Sequence[TemporalFilter], *,
                 flow: bool = False, flow_size: int | None = FLOW_SIDE):
        self.stylizer, self.styles, self.filters = stylizer, styles, list(filters)
        self.flow = flow or any(f.needs_motion for f in self.filters)
        self.flow_size = flow_size
        self.frames = 0
        self._changes = [0.0] * len(self.filters)
        self._previous: tuple[torch.Tensor, FlowFrame | None, list[torch.Tensor]] | None = None

    def __call__(self, frame: Image.Image) -> PaintedFrame:
        # Resized here as the stylizer would, so that the filters see the content at the output's size.
        content = resize(frame, self.stylizer.content_size, side=self.stylizer.resize_by)
        painted = _even(to_tensor(self.stylizer(content, self.styles)))
        content = _even(to_tensor(content))
        current = flow_frame(content, self.flow_size) if self.flow else None
        previous = self._previous if self._previous is not None and self._previous[0].shape == content.shape else None
        motion = estimate_motion(previous[1], current) if current is not None and previous is not None else None
        images = [to_image(f(painted, content, motion)) for f in self.filters]
        written = [to_tensor(image) for image in images]
        if previous is not None:
            for index, (output, earlier) in enumerate(zip(written, previous[2])):
                self._changes[index] += float((output - earlier).abs().mean()) * 255.0
        self._previous = (content, current, written)
        self.frames += 1
        return PaintedFrame(current, motion, images, written)

    def mean_change(self, index: int = 0) -> float:
        """Mean absolute difference (0-255) between consecutive outputs of filter ``index``."""
        return self._changes[index] / (self.frames - 1) if self.frames > 1 else 0.0


def _check_styles(stylizer: Stylizer, styles: StyleInput | None) -> StyleInput | None:
    """Refuse, before any work, styles that the model cannot take, or none where it needs them."""
    given = styles is not None and (not isinstance(styles, (list, tuple)) or len(styles) > 0)
    if getattr(stylizer.model, "needs_style", True):
        if not given:
            raise BrushworkError(f"give a style image: {stylizer.method} paints any style")
        return styles
    if given:
        raise BrushworkError(f"a {stylizer.method} model paints the style it was trained on: give no style image")
    return None


class _Writer:
    """The output container: H.264 from painted frames, and the input's audio copied or re-encoded to AAC."""

    def __init__(self, path: Path, output: Path, video: av.video.stream.VideoStream, audio: Sequence, crf: int):
        import av
        self.video_in, self.audio_in, self.crf = video, list(audio), crf
        self.width = self.height = self.frames = 0
        try:
            self.container = av.open(str(path), "w")
        except ValueError:  # FFmpeg knows no container for this extension
            raise BrushworkError(f"{output}: cannot tell the video format from {output.suffix or 'no extension'!r}; "
                                 "use .mp4, .mkv or .mov") from None
        try:
            self.video_out = self.container.add_stream("libx264", rate=video.average_rate or video.guessed_rate)
        except ValueError:
            self.container.close()
            raise BrushworkError(f"{output}: a {output.suffix} file cannot hold H.264 video; use .mp4, .mkv "
                                 "or .mov") from None
        self.audio_out: dict[int, av.stream.Stream] = {}
        self.reencoded: set[int] = set()
        self._held: list[av.Packet] = []  # audio read before the first frame fixed the video stream's size

    def __enter__(self) -> "_Writer":
        return self

    def __exit__(self, *exc) -> None:
        self.container.close()

    @property
    def audio_mode(self) -> str:
        if not self.audio_in:
            return "none"
        return "re-encoded" if self.reencoded else "copied"

    def write_video(self, painted: Image.Image, source: av.VideoFrame) -> None:
        import av
        if not self.width:
            self._start(*painted.size)
        frame = av.VideoFrame.from_image(painted).reformat(
            self.width, self.height, format="yuv420p", dst_colorspace="ITU709", dst_color_range="MPEG")
        frame.time_base = self.video_in.time_base
        # Some raw streams carry no timestamps: then the frame's place at the nominal rate.
        frame.pts = source.pts if source.pts is not None else round(
            self.frames / (self.video_out.codec_context.framerate * self.video_in.time_base))
        self.container.mux(self.video_out.encode(frame))
        self.frames += 1

    def write_audio(self, packet: av.Packet) -> None:
        if not self.width:
            self._held.append(packet)
        elif packet.stream.index in self.reencoded:
            for frame in packet.decode():
                self.container.mux(self.audio_out[packet.stream.index].encode(frame))
        elif packet.size:  # the empty packet that ends a stream only flushes decoders
            packet.stream = self.audio_out[packet.stream.index]
            self.container.mux(packet)

    def finish(self) -> None:
        """Flush the encoders (x264 holds frames back for its look-ahead)."""
        self.container.mux(self.video_out.encode(None))
        for index in self.reencoded:
            self.container.mux(self.audio_out[index].encode(None))

    def _start(self, width: int, height: int) -> None:
        """Set up the streams once the first painted frame gives the size, then write the held audio."""
        self.width, self.height = width, height
        context = self.video_out.codec_context
        context.width, context.height, context.pix_fmt = width, height, "yuv420p"
        context.time_base = self.video_out.time_base = self.video_in.time_base
        context.options = {"crf": str(self.crf)}
        # The frames are converted with BT.709 at limited range: say so, so that players convert back alike.
        context.colorspace = context.color_primaries = context.color_trc = 1  # AVCOL_*_BT709
        context.color_range = 1  # AVCOL_RANGE_MPEG
        for stream in self.audio_in:
            try:
                self.audio_out[stream.index] = self.container.add_stream_from_template(stream)
            except ValueError:  # the container cannot hold this codec
                # The standard layout of that many channels: AAC takes no unordered ("1 channels") layout.
                self.audio_out[stream.index] = self.container.add_stream(
                    "aac", rate=stream.rate, layout=f"{stream.codec_context.channels}c")
                self.reencoded.add(stream.index)
        held, self._held = self._held, []
        for packet in held:
            self.write_audio(packet)


def _frames(source, video, writer: _Writer, end_time: Fraction | None, max_frames: int | None):
    """The decoded video frames, passing the audio packets to ``writer`` on the way; with ``max_frames``,
    audio only up to ``end_time``."""
    audio_done: set[int] = set()
    frames = 0
    for packet in source.demux(video, *writer.audio_in):
        if packet.stream.index == video.index:
            if max_frames is None or frames < max_frames:
                for frame in packet.decode():
                    if max_frames is not None and frames >= max_frames:
                        break
                    frames += 1
                    yield frame
        elif end_time is not None and packet.pts is not None and packet.pts * packet.time_base >= end_time:
            audio_done.add(packet.stream.index)
        else:
            writer.write_audio(packet)
        if max_frames is not None and frames >= max_frames and len(audio_done) == len(writer.audio_in):
            return


def _open_video(source: VideoSource):
    import av
    label = _label(source)
    try:
        container = av.open(source if not isinstance(source, os.PathLike) else os.fspath(source))
    except FileNotFoundError:
        raise BrushworkError(f"{label}: no such file") from None
    except IsADirectoryError:
        raise BrushworkError(f"{label}: is a folder, not a video file") from None
    except PermissionError:
        raise BrushworkError(f"{label}: permission denied") from None
    except av.error.FFmpegError:
        raise BrushworkError(f"{label}: not a video, or a format FFmpeg cannot read") from None
    if any(part in container.format.name for part in _IMAGE_FORMATS):
        container.close()
        raise BrushworkError(f"{label}: an image, not a video; paint it with 'brushwork stylize'")
    if not container.streams.video:
        container.close()
        raise BrushworkError(f"{label}: has no video stream")
    return container


def _temporary_path(output: Path) -> Path:
    """A new empty file beside ``output``, with the same extension (FFmpeg picks the container by it).
    Made here, not left to FFmpeg (which opens it at the first frame), so an unwritable place fails at once."""
    path = output.with_name(f".{output.name}.{secrets.token_hex(4)}.part{output.suffix}")
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        path.touch(exist_ok=False)
    except FileExistsError:  # from mkdir: a file is where the folder should be
        raise BrushworkError(f"{output}: cannot write ({output.parent} is not a folder)") from None
    except OSError as error:
        raise BrushworkError(f"{output}: cannot write ({error.strerror or error})") from None
    return path


def _end_time(video, max_frames: int | None) -> Fraction | None:
    """When the first ``max_frames`` frames end, in seconds from the file's start (None: the whole video)."""
    if max_frames is None:
        return None
    rate = video.average_rate or video.guessed_rate
    return (video.start_time or 0) * video.time_base + Fraction(max_frames) / rate


def _frame_count(source, video, max_frames: int | None) -> int | None:
    """The number of frames for the progress bar: from the header, or estimated from the duration."""
    import av
    count = video.frames or (round(source.duration / av.time_base * video.average_rate)
                             if source.duration and video.average_rate else None)
    return min(count, max_frames) if count and max_frames else count or max_frames


def _even(image: torch.Tensor) -> torch.Tensor:
    """Drop a last odd row or column: yuv420p stores colour at half resolution."""
    height, width = image.shape[-2:]
    return image[..., : height - height % 2, : width - width % 2]


def _label(source: VideoSource) -> str:
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    return getattr(source, "name", None) or "video data"

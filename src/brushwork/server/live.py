"""The live studio: previews repainted as the settings change (``POST /api/preview``), and a webcam painted in
real time over a WebSocket (``/api/live``). Both paint with :class:`brushwork.Preview` on the inference queue's
workers; nothing is stored (the page saves through ``POST /api/stylize``)."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time
from collections import deque
from typing import Annotated, Literal

import anyio
import torch
from fastapi import APIRouter, HTTPException, Request, Response, WebSocket, WebSocketDisconnect
from fastapi.concurrency import run_in_threadpool
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .. import weights as registry
from ..api import Kept, Preview
from ..errors import ImageError
from ..images import load_image, to_image, to_tensor
from ..temporal import temporal_blend
from .inference import ClientGone, ModelUnavailable, QueueFull
from .routes import (MAX_STYLES, Services, ServicesDep, _noticing_disconnect, _pin_refs, _ref_image, _unpin,
                     model_names)
from .schemas import ERRORS, Error
from .storage import check_header

log = logging.getLogger("brushwork.server")
router = APIRouter(prefix="/api", responses=ERRORS)

#: JPEG quality of previews and painted webcam frames: small to send, fine to look at.
PREVIEW_QUALITY = 85
#: WebSocket close codes (RFC 6455): a message too big, against the rules, or the server full for now.
TOO_BIG, POLICY, TRY_LATER = 1009, 1008, 1013

Preserve = Literal["none", "luminance", "histogram"]
ClientId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{8,64}$",
                                description="A random id the page makes once (its previews share a cache, and a "
                                            "newer preview of the same client drops an older one still waiting).")]


class Superseded(Exception):
    """A newer preview of the same client arrived while this one waited: it is dropped, unpainted."""


class PaintSettings(BaseModel):
    """How to paint: as for ``POST /api/stylize``, with style references only."""

    model_config = ConfigDict(extra="forbid")
    styles: list[str] = Field(default=[], max_length=MAX_STYLES,
                              description="sample:NAME or image:SHA256 (none for a per-style model).")
    style_weights: list[Annotated[float, Field(ge=0, allow_inf_nan=False)]] | None = None
    model: str = registry.DEFAULT_MODEL
    alpha: float = Field(1.0, ge=0, le=1, allow_inf_nan=False)
    preserve_color: Preserve = "none"


class PreviewRequest(PaintSettings):
    client: ClientId
    content: str = Field(description="sample:NAME or image:SHA256.")
    size: int = Field(512, ge=16, description="Shorter side of the preview, in pixels.")


class LiveSettings(PaintSettings):
    smooth: float = Field(0.0, ge=0, lt=1, allow_inf_nan=False,
                          description="Temporal smoothing (0: none), as for `brushwork video --smooth`.")


def _check_model(services: Services, settings: PaintSettings, size: int | None = None) -> None:
    if settings.model not in model_names():
        raise HTTPException(422, f"unknown model {settings.model!r}; models: {', '.join(model_names())}")
    if settings.model == "gatys":
        raise HTTPException(422, "gatys optimises for a minute or more: it cannot paint live; choose it for the "
                                 "saved result instead")
    entry = registry.REGISTRY[settings.model]
    if entry.architecture == "johnson":
        if settings.styles:
            raise HTTPException(422, f"{settings.model} paints the one style it was trained on ({entry.style}): "
                                     "give no style image")
    elif not 1 <= len(settings.styles) <= MAX_STYLES:
        raise HTTPException(422, f"give 1 to {MAX_STYLES} style references")
    if settings.style_weights is not None and len(settings.style_weights) != len(settings.styles):
        raise HTTPException(422, f"style_weights: give one weight per style ({len(settings.styles)})")
    if settings.style_weights is not None and not sum(settings.style_weights) > 0:
        raise HTTPException(422, "style_weights: at least one weight above 0")
    if size is not None and size > services.settings.preview_max_size:
        raise HTTPException(422, f"size {size} is more than this server paints live "
                                 f"({services.settings.preview_max_size} px); save the result for a larger one")


def jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=PREVIEW_QUALITY)
    return buffer.getvalue()


@router.post("/preview", response_class=Response, tags=["stylise"],
             responses={200: {"content": {"image/jpeg": {}}},
                        409: {"model": Error, "description": "Superseded by a newer preview of the same client."}})
async def preview(request: Request, body: PreviewRequest, services: ServicesDep) -> Response:
    """Paint a preview (JPEG, not stored) of a content in the given styles and settings, fast: the content's
    features and the styles' signals are kept for each client, so a change of alpha, mix or colour mode only
    decodes. A preview still waiting when a newer one of the same client arrives is dropped (409)."""
    _check_model(services, body, body.size)
    client = services.previews.get(body.client)
    client.newest += 1
    number = client.newest
    with services.queue.admit() as place, _noticing_disconnect(request, place.client_gone):
        pinned: list[str] = []
        try:
            refs = await run_in_threadpool(_pin_refs, services, [body.content, *body.styles], pinned)
            named = [Kept((ref, body.size), _loader(ref, path, body.size)) for ref, path in refs]

            def paint() -> tuple[bytes, float]:
                with client.lock:
                    if client.newest != number:
                        raise Superseded()
                    start = time.perf_counter()
                    model = services.queue.model(body.model)
                    image = client.preview.paint(model, named[0], named[1:], alpha=body.alpha,
                                                 style_weights=body.style_weights,
                                                 preserve_color=None if body.preserve_color == "none"
                                                 else body.preserve_color)
                    seconds = time.perf_counter() - start
                return jpeg(image), seconds

            try:
                data, seconds = await place.call(paint, body.model)
            except Superseded:
                raise HTTPException(409, "superseded: a newer preview of this client arrived first") from None
        finally:
            with anyio.CancelScope(shield=True):
                await run_in_threadpool(_unpin, services, pinned)
    return Response(data, media_type="image/jpeg",
                    headers={"Cache-Control": "no-store", "X-Paint-Seconds": f"{seconds:.4f}"})


def _loader(ref: str, path, size: int):
    """The image of a pinned reference, at ``size``, read when a Preview needs it (not when it is kept)."""
    return lambda: _ref_image(ref, path, size)


# ---------------------------------------------------------------------------------------------- webcam

class LiveError(Exception):
    """A frame or a setting the server refuses: told to the client, which goes on."""


@router.websocket("/live")
async def live(socket: WebSocket) -> None:
    """The webcam: send the settings as JSON text (any time; accepted ones are answered with ``{"settings": "ok",
    "limits": {...}}``: the most frames a second, the largest frame side and bytes), then JPEG or PNG frames as
    binary messages; each frame painted comes back as a binary JPEG, a frame refused as ``{"error": ...}``. A frame that arrives while
    another is painted replaces the one waiting (only the newest is painted). Frames over the size limit, or
    faster than the frame-rate limit, close the connection with the reason."""
    services: Services = socket.app.state.services
    limits = services.settings
    await socket.accept()  # then closed with a reason the browser can show (one refused before opening has none)
    if services.live_connections >= limits.live_connections:
        await socket.close(TRY_LATER, f"the server paints {limits.live_connections} webcams already; try again "
                                      "in a moment")
        return
    services.live_connections += 1
    try:
        await LiveConnection(socket, services).run()
    except WebSocketDisconnect:
        pass
    finally:
        services.live_connections -= 1


class LiveConnection:
    """One webcam: a reader that keeps the newest frame, and a painter that paints it and sends it back."""

    def __init__(self, socket: WebSocket, services: Services):
        self.socket = socket
        self.services = services
        self.settings: LiveSettings | None = None
        self.refs: list[tuple[str, object]] = []
        self.pinned: list[str] = []
        self.preview = Preview(keep=MAX_STYLES, max_bytes=int(services.settings.preview_cache_mb * 2**20))
        self.frame: bytes | None = None
        self.frame_ready = asyncio.Event()
        self.arrivals: deque[float] = deque()
        self.previous: tuple[torch.Tensor, torch.Tensor] | None = None  # (content, output) for smoothing

    async def run(self) -> None:
        painter = asyncio.create_task(self.paint_frames())
        try:
            await self.read()
        finally:
            painter.cancel()
            try:
                await painter
            except (asyncio.CancelledError, WebSocketDisconnect):
                pass
            except Exception as error:  # a send to a connection that has closed meanwhile, say
                log.info("the painter of a live connection stopped: %r", error)
            await run_in_threadpool(_unpin, self.services, self.pinned)

    async def read(self) -> None:
        limits = self.services.settings
        while True:
            message = await self.socket.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("text") is not None:
                await self.take_settings(message["text"])
                continue
            frame = message.get("bytes") or b""
            now = time.monotonic()
            self.arrivals.append(now)
            while self.arrivals and self.arrivals[0] <= now - 1.0:
                self.arrivals.popleft()
            if len(frame) > limits.live_max_frame_bytes:
                return await self.socket.close(TOO_BIG, f"a frame of {len(frame):,} bytes is more than this "
                                                        f"server's limit of {limits.live_max_frame_bytes:,}")
            if len(self.arrivals) > limits.live_max_fps:
                return await self.socket.close(POLICY, f"more than {limits.live_max_fps:g} frames a second; send "
                                                       "the next frame when the last one comes back")
            self.frame = frame
            self.frame_ready.set()

    async def take_settings(self, text: str) -> None:
        try:
            settings = LiveSettings.model_validate_json(text[:10_000])
            _check_model(self.services, settings)
            pinned: list[str] = []
            refs = await run_in_threadpool(_pin_refs, self.services, settings.styles, pinned)
        except ValidationError as error:
            problems = "; ".join(f"{'.'.join(map(str, p['loc'])) or 'settings'}: {p['msg']}" for p in error.errors())
            return await self.tell(problems)
        except HTTPException as error:
            return await self.tell(error.detail)
        await run_in_threadpool(_unpin, self.services, self.pinned)
        self.settings, self.refs, self.pinned = settings, refs, pinned
        self.previous = None
        limits = self.services.settings  # so that a client can pace its frames within them
        await self.socket.send_text(json.dumps({"settings": "ok", "limits": {
            "max_fps": limits.live_max_fps, "max_side": limits.live_max_side,
            "max_frame_bytes": limits.live_max_frame_bytes}}))

    async def tell(self, problem: str) -> None:
        await self.socket.send_text(json.dumps({"error": problem}))

    async def paint_frames(self) -> None:
        while True:
            await self.frame_ready.wait()
            self.frame_ready.clear()
            frame, self.frame = self.frame, None
            try:
                painted = await self.paint(frame)
            except LiveError as error:
                await self.tell(str(error))
                continue
            await self.socket.send_bytes(painted)

    async def paint(self, frame: bytes) -> bytes:
        services, settings = self.services, self.settings
        if settings is None:
            raise LiveError("send the settings (JSON text) before the first frame")
        limits = services.settings
        try:
            await run_in_threadpool(check_header, frame, "frame", limits.live_max_side ** 2)
            async with services.decodes:
                image = await run_in_threadpool(load_image, frame, max_pixels=limits.live_max_side ** 2)
        except HTTPException as error:
            raise LiveError(error.detail) from None
        except ImageError as error:
            raise LiveError(f"frame: {str(error).removeprefix('image data: ')}") from None
        if max(image.size) > limits.live_max_side:
            raise LiveError(f"a frame of {image.width}x{image.height} is larger than this server paints live "
                            f"({limits.live_max_side} px on its longer side)")
        size = min(image.size)  # the styles at the frame's size, as a stylisation resizes them
        styles = [Kept((ref, size), _loader(ref, path, size)) for ref, path in self.refs]

        def paint() -> bytes:
            model = services.queue.model(settings.model)
            painted = self.preview.paint(model, image, styles, alpha=settings.alpha,
                                         style_weights=settings.style_weights,
                                         preserve_color=None if settings.preserve_color == "none"
                                         else settings.preserve_color)
            if settings.smooth:
                painted = self.smoothed(image, painted, settings.smooth)
            return jpeg(painted)

        try:
            with services.queue.admit() as place:
                return await place.call(paint, settings.model)
        except (QueueFull, ModelUnavailable, ClientGone) as error:
            raise LiveError(str(error)) from None
        except Exception as error:  # a frame the model cannot paint (too small, say): the connection goes on
            log.info("a live frame was not painted: %s", error)
            raise LiveError(f"this frame was not painted: {error}") from None

    def smoothed(self, frame: Image.Image, painted: Image.Image, strength: float) -> Image.Image:
        """The painted frame blended towards the previous one where the picture stayed still (as in videos)."""
        content, output = to_tensor(frame), to_tensor(painted)
        if self.previous is not None and self.previous[0].shape == content.shape:
            output = temporal_blend(output, self.previous[1], content, self.previous[0], strength)
        self.previous = (content, output)
        return to_image(output)

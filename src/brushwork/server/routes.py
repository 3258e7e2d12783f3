"""The REST API: stylise, gallery, images, models and the study. A thin layer over ``brushwork.api``."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import random
import threading
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path as FilePath
from typing import Annotated, Iterator, Literal

import anyio
from fastapi import APIRouter, Depends, File, Form, HTTPException, Path, Query, Request, Response, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from PIL import Image
from sqlalchemy import exists, func, or_, select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from .. import weights as registry
from ..api import style_weights_for
from ..errors import ImageError
from ..images import MAX_ASPECT, load_image, resize
from ..samples import PREFIX as SAMPLE_PREFIX, SAMPLES, is_sample, load_sample
from . import study
from .db import Participant, Result, ResultInput, StoredImage, Trial, TrialItem, utcnow
from .inference import InferenceQueue, Job
from .limits import RateLimit
from .previews import PreviewClients
from .schemas import (ERRORS, STUDY_ERRORS, Answer, Health, ImageInfo, InputInfo, ModelInfo, NewParticipant,
                      ResultInfo, ResultPage, ResultUpdate, SampleInfo, StudyResults, TrialInfo, TrialItemInfo,
                      TrialRequest)
from .settings import Settings
from .storage import (DISK_FULL, MEDIA_TYPES, ImageStore, StorageFull, Upload, check_header, decode_upload, encode,
                      no_room)

IMAGE_PREFIX = "image:"
#: Most style images mixed in one stylisation.
MAX_STYLES = 4
#: Loss networks Gatys can run on; it needs one of them.
GATYS_NETWORKS = ("vgg16-hed", "vgg19", "vgg16")
#: Largest id an INTEGER column holds everywhere (32 bits on PostgreSQL). A larger id names nothing, and a larger
#: offset is past every result.
MAX_INTEGER = 2**31 - 1
#: Unused uploads deleted by one sweep at most (the store's lock is held meanwhile); the next sweep goes on.
SWEEP_BATCH = 1000

log = logging.getLogger("brushwork.server")
router = APIRouter(prefix="/api", responses=ERRORS)


@dataclass
class Services:
    """What the endpoints share, made once by ``create_app``."""

    settings: Settings
    store: ImageStore
    sessions: sessionmaker
    queue: InferenceQueue
    rng: random.Random
    limits: RateLimit
    #: Bounds the uploads (and stored images) decoded at once: ``Settings.concurrent_decodes``.
    decodes: asyncio.Semaphore
    #: The live studio's preview clients, and webcams connected.
    previews: PreviewClients
    live_connections: int = 0


def get_services(request: Request) -> Services:
    return request.app.state.services


def get_session(request: Request) -> Iterator[Session]:
    with request.app.state.services.sessions() as session:
        yield session


ServicesDep = Annotated[Services, Depends(get_services)]
SessionDep = Annotated[Session, Depends(get_session)]
Sha256 = Annotated[str, Path(pattern="^[0-9a-f]{64}$")]


def single_valued(*repeatable: str):
    """A dependency refusing a form that gives a field twice (but the ``repeatable`` list fields): which of two
    values counts would be guesswork."""
    async def check(request: Request) -> None:
        form = await request.form()  # the form the endpoint reads: Starlette parses it once
        for name in dict.fromkeys(form.keys()):
            if name not in repeatable and len(form.getlist(name)) > 1:
                raise HTTPException(422, f"{name[:100]}: given {len(form.getlist(name))} times; give it once")

    return Depends(check)


# ---------------------------------------------------------------------------------------------- models, samples

def model_names() -> list[str]:
    return [name for name, entry in registry.REGISTRY.items() if entry.kind == "model"] + ["gatys"]


def _present(names: list[str], dirs: list) -> bool:
    return all(item.found for name in names for item in registry.status(name, dirs))


@router.get("/models", response_model=list[ModelInfo], tags=["about"])
def list_models(services: ServicesDep) -> list[ModelInfo]:
    """Every model and loss network, with summary, source, licence and citation; models first."""
    dirs = services.settings.weights_dirs
    models = [
        ModelInfo(name=e.name, method=e.architecture if e.kind == "model" else "", kind=e.kind, summary=e.summary,
                  source=e.source, licence=e.licence, citation=e.citation, notes=e.notes,
                  default=e.name == registry.DEFAULT_MODEL,
                  available=_present([e.name] + ([e.encoder] if e.encoder else []), dirs))
        for e in registry.REGISTRY.values()
    ]
    gatys = ModelInfo(
        name="gatys", method="gatys", kind="model",
        summary=f"Optimises the image itself against VGG content and Gram style losses; no trained network. Slow: "
                f"this server runs {services.settings.gatys_steps} steps, at most "
                f"{services.settings.gatys_max_size} px.",
        source="no weights of its own: runs over a loss network of this list (vgg16-hed when nothing better is "
               "at hand)",
        licence="MIT (brushwork's implementation); the loss network's licence applies to its weights",
        citation="Gatys, Ecker, Bethge. Image Style Transfer Using Convolutional Neural Networks. CVPR 2016.",
        notes="", default=False, available=any(_present([name], dirs) for name in GATYS_NETWORKS))
    return [*[m for m in models if m.kind == "model"], gatys, *[m for m in models if m.kind != "model"]]


@router.get("/samples", response_model=list[SampleInfo], tags=["images"])
def list_samples() -> list[SampleInfo]:
    """Sample photos (from scikit-image) that work as content or style without any upload."""
    return [SampleInfo(ref=SAMPLE_PREFIX + name, description=description, url=f"/api/samples/{name}")
            for name, (_, description) in SAMPLES.items()]


@functools.lru_cache(maxsize=len(SAMPLES))
def _sample_jpeg(name: str) -> bytes:
    return encode(load_sample(SAMPLE_PREFIX + name), "jpg")


@router.get("/samples/{name}", response_class=Response, tags=["images"],
            responses={200: {"content": {"image/jpeg": {}}}})
def get_sample(name: str) -> Response:
    if name not in SAMPLES:
        raise HTTPException(404, f"no sample {name!r}; samples: {', '.join(SAMPLES)}")
    return Response(_sample_jpeg(name), media_type="image/jpeg", headers={"Cache-Control": "max-age=86400"})


# ---------------------------------------------------------------------------------------------- images

def image_info(image: StoredImage) -> ImageInfo:
    return ImageInfo(ref=IMAGE_PREFIX + image.sha256, sha256=image.sha256, url=f"/api/images/{image.sha256}",
                     width=image.width, height=image.height, name=image.name, artwork=image.artwork)


@router.post("/images", status_code=201, response_model=ImageInfo, tags=["images"], dependencies=[single_valued()])
async def upload_image(services: ServicesDep, file: Annotated[UploadFile, File(description="An image file.")],
                       artwork: Annotated[bool, Form(description="A real artwork for the deception study.")] = False
                       ) -> ImageInfo:
    """Store an image once, to use it by reference (``image:SHA256``) in later stylisations. An image that no
    stylisation uses (and that is not an artwork) is deleted after ``--unused-upload-hours``."""
    checked = await _checked(services, [file])
    services.store.check_room(len(checked[0][0]))
    upload, _ = await _decoded(services, *checked)

    def store() -> ImageInfo:
        with services.sessions() as session:
            image = _committed(services, session, lambda: _add_upload(services, session, upload, artwork))
            return image_info(image)

    return await run_in_threadpool(store)


@router.get("/images/{sha256}", response_class=FileResponse, tags=["images"],
            responses={200: {"content": {"image/png": {}, "image/jpeg": {}, "image/webp": {}}}})
def get_image(sha256: Sha256, services: ServicesDep, session: SessionDep) -> FileResponse:
    """An image file; its name is its content, so it may be cached for ever."""
    image = session.get(StoredImage, sha256)
    path = services.store.path(sha256, image.extension) if image else None
    if path is None or not path.is_file():
        raise HTTPException(404, f"no image {sha256}")
    return FileResponse(path, media_type=MEDIA_TYPES[image.extension],
                        headers={"Cache-Control": "public, max-age=31536000, immutable"})


@router.get("/images/{sha256}/thumbnail", response_class=FileResponse, tags=["images"],
            responses={200: {"content": {"image/jpeg": {}}}})
async def get_thumbnail(sha256: Sha256, services: ServicesDep) -> FileResponse:
    """A small JPEG of a stored image, for the gallery: made the first time it is asked for, then kept."""
    def thumbnail() -> FilePath | None:
        with services.sessions() as session:
            image = session.get(StoredImage, sha256)
            extension = image.extension if image else None
        try:
            return services.store.thumbnail(sha256, extension) if extension else None
        except (FileNotFoundError, OSError):  # its file gone meanwhile, or unreadable
            return None

    async with services.decodes:
        path = await run_in_threadpool(thumbnail)
    if path is None:
        raise HTTPException(404, f"no image {sha256}")
    return FileResponse(path, media_type="image/jpeg", headers={"Cache-Control": "public, max-age=31536000, immutable"})


Checked = tuple[bytes, str, str]  # an upload's bytes, name and format


async def _checked(services: Services, files: list[UploadFile]) -> list[Checked]:
    """The uploads, each refused from its header alone (type, pixel count) before anything is decoded."""
    checked = []
    for file in files:
        data = await file.read()
        name = file.filename or ""
        checked.append((data, name, await run_in_threadpool(check_header, data, name, services.settings.max_pixels)))
    return checked


async def _decoded(services: Services, checked: Checked, size: int | None = None) -> tuple[Upload, Image.Image]:
    """A checked upload and its image (resized for a stylisation of ``size``), decoded when a decoding slot is
    free: however many requests arrive, only so many full-size images are in memory at once."""
    def decode() -> tuple[Upload, Image.Image]:
        upload, image = decode_upload(*checked, services.settings.max_pixels)
        return upload, _prepared(image, size) if size else image

    async with services.decodes:
        return await run_in_threadpool(decode)


def _prepared(image: Image.Image, size: int) -> Image.Image:
    """An input at the size it is painted at (as the Stylizer would resize it): a large upload does not sit in
    memory at full size while it waits in the queue."""
    if max(image.size) / min(image.size) > MAX_ASPECT:
        raise HTTPException(422, f"an image of {image.width}x{image.height} is more than {MAX_ASPECT:g} times as "
                                 f"long as it is wide; crop it first")
    return resize(image, size)


def _add_upload(services: Services, session: Session, upload: Upload, artwork: bool) -> StoredImage:
    image = _add_image(services, session, upload.data, upload.extension, width=upload.width, height=upload.height,
                       origin="upload", name=upload.name[:255])
    image.artwork = image.artwork or artwork
    if image.origin == "upload":  # an unused upload is kept for its grace period after its latest upload
        image.created = utcnow()
    return image


def _add_image(services: Services, session: Session, data: bytes, extension: str, **columns) -> StoredImage:
    """The stored image of ``data``: its file, and its row unless there already (with the store's lock held)."""
    sha256 = services.store.put(data, extension)
    image = session.get(StoredImage, sha256)
    if image is None:
        image = StoredImage(sha256=sha256, extension=extension, **columns)
        session.add(image)
    return image


def _committed(services: Services, session: Session, change):
    """Run ``change`` and commit, with the store's lock held (no file goes meanwhile); once more if another
    process stored the same image first. When it fails, the files it wrote that no row refers to go too."""
    with services.store.lock:
        for attempt in range(2):
            try:
                value = change()
                session.commit()
                return value
            except BaseException as error:
                written = [(image.sha256, image.extension) for image in session.new if isinstance(image, StoredImage)]
                session.rollback()
                for sha256, extension in written:
                    if session.get(StoredImage, sha256) is None:
                        services.store.remove(sha256, extension)
                if isinstance(error, OperationalError) and no_room(error):  # the database's disk is full
                    raise StorageFull(DISK_FULL) from error
                if attempt or not isinstance(error, IntegrityError):
                    raise


# ---------------------------------------------------------------------------------------------- stylise

Preserve = Literal["none", "luminance", "histogram"]


@router.post("/stylize", status_code=201, response_model=ResultInfo, tags=["stylise"],
             dependencies=[single_valued("style", "style_ref")])
async def stylize(
    request: Request,
    services: ServicesDep,
    content: Annotated[UploadFile | None, File(description="Content image (or give content_ref).")] = None,
    content_ref: Annotated[str | None, Form(description="sample:NAME or image:SHA256.")] = None,
    style: Annotated[list[UploadFile], File(description="Style image(s); several are mixed.")] = [],
    style_ref: Annotated[list[str], Form(description="sample:NAME or image:SHA256; after the uploaded "
                                                     "styles, in order.")] = [],
    model: Annotated[str, Form(description="A model of GET /api/models.")] = registry.DEFAULT_MODEL,
    alpha: Annotated[float, Form(ge=0, le=1, allow_inf_nan=False,
                                 description="0 keeps the content, 1 is full style.")] = 1.0,
    style_weights: Annotated[str | None, Form(description="Comma-separated weights of the styles, e.g. "
                                                          "0.3,0.7.")] = None,
    preserve_color: Annotated[Preserve, Form(description="Keep the content's colours: luminance-only "
                                                         "transfer, or match the style's colours first.")] = "none",
    size: Annotated[int, Form(ge=16, description="Shorter side of the output, in pixels.")] = 512,
    format: Annotated[Literal["png", "jpg"], Form(description="Output file type.")] = "png",
    title: Annotated[str, Form(max_length=200)] = "",
) -> ResultInfo:
    """Paint the content in the style of the style image(s); the result joins the gallery.

    Runs on a worker thread; when every worker is busy and the queue is full the answer is 503 at once. A request
    whose client closes the connection before its stylisation starts is dropped, unpainted and unsaved.
    """
    settings = services.settings
    if model not in model_names():
        raise HTTPException(422, f"unknown model {model!r}; models: {', '.join(model_names())}")
    largest = settings.gatys_max_size if model == "gatys" else settings.max_size
    if size > largest:
        raise HTTPException(422, f"size {size} is more than this server allows for {model} ({largest} px)")
    if (content is None) == (content_ref is None):
        raise HTTPException(422, "give one content: an uploaded file (content) or a reference (content_ref)")
    entry = registry.REGISTRY.get(model)
    if entry is not None and entry.architecture == "johnson":  # a per-style network: its style is in the weights
        if style or style_ref:
            raise HTTPException(422, f"{model} paints the one style it was trained on ({entry.style}): "
                                     "give no style image")
        weights = None
    elif not 1 <= len(style) + len(style_ref) <= MAX_STYLES:
        raise HTTPException(422, f"give 1 to {MAX_STYLES} style images (style files and/or style_ref)")
    else:
        weights = _parse_weights(style_weights, len(style) + len(style_ref))

    # A full queue refuses the request before anything is decoded.
    with services.queue.admit() as place, _noticing_disconnect(request, place.client_gone):
        checked = await _checked(services, ([content] if content is not None else []) + style)
        # Room for the uploads, and for the output (whose size is known only once painted): refused before the work.
        services.store.check_room(sum(len(data) for data, _, _ in checked) + 1)
        pinned: list[str] = []
        try:
            refs = await run_in_threadpool(_pin_refs, services,
                                           ([] if content_ref is None else [content_ref]) + style_ref, pinned)
            uploads = [await _decoded(services, item, size) for item in checked]
            async with services.decodes:
                ref_images = await run_in_threadpool(lambda: [_ref_image(ref, path, size) for ref, path in refs])
            content_upload, content_image = uploads.pop(0) if content is not None else (None, ref_images[0])
            style_uploads = [upload for upload, _ in uploads]
            style_images = [image for _, image in uploads] + ref_images[content_upload is None:]
            job = Job(content_image, style_images, model, alpha, weights,
                      None if preserve_color == "none" else preserve_color, size,
                      {"steps": settings.gatys_steps} if model == "gatys" else {})
            output, seconds = await place.run(job)
            return await run_in_threadpool(_save, services, output, seconds, format, content_upload, style_uploads,
                                           [ref for ref, _ in refs], job, title)
        finally:
            with anyio.CancelScope(shield=True):  # also when the client went away
                await run_in_threadpool(_unpin, services, pinned)


@contextlib.contextmanager
def _noticing_disconnect(request: Request, gone: threading.Event) -> Iterator[None]:
    """Set ``gone`` if the client closes its connection meanwhile. (The request's body has been read: the next
    message the server has for it is the disconnect.)"""
    async def watch() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass
        gone.set()

    watcher = asyncio.create_task(watch())
    try:
        yield
    finally:
        watcher.cancel()


def _save(services: Services, output: Image.Image, seconds: float, format: str, content_upload: Upload | None,
          style_uploads: list[Upload], given: list[str], job: Job, title: str) -> ResultInfo:
    """The result in the gallery, with its uploads and the references ``given``: all rows and files, or none."""
    data = encode(output, format)
    with services.sessions() as session:
        def add() -> Result:
            content_refs = ([IMAGE_PREFIX + _add_upload(services, session, content_upload, False).sha256]
                            if content_upload else given[:1])
            # Uploaded style images are paintings the person chose: real artworks for the deception study.
            style_refs = [IMAGE_PREFIX + _add_upload(services, session, upload, True).sha256
                          for upload in style_uploads] + given[content_upload is None:]
            image = _add_image(services, session, data, format, width=output.width, height=output.height,
                               origin="result")
            result = Result(image_sha256=image.sha256, model=job.model, method=_method_of(job.model),
                            alpha=job.alpha, style_weights=job.style_weights, preserve_color=job.preserve_color,
                            size=job.size, seconds=round(seconds, 4), title=title,
                            inputs=[ResultInput(position=position, ref=ref, image_sha256=_sha256_of(ref))
                                    for position, ref in enumerate(content_refs + style_refs)])
            session.add(result)
            return result

        result = _committed(services, session, add)
        session.refresh(result)
        return result_info(result)


def _method_of(model: str) -> str:
    return "gatys" if model == "gatys" else registry.get(model).architecture


def _parse_weights(text: str | None, count: int) -> list[float] | None:
    if not text:
        return None
    try:
        weights = [float(part) for part in text.split(",")]
    except ValueError:
        raise HTTPException(422, f"style_weights: numbers separated by commas, not {text!r}") from None
    # float() also reads inf, nan and 1e999 (as inf), and finite weights may still add up to inf: none of them
    # scales to a mix, and none can be stored as JSON.
    if not math.isfinite(sum(weights)):
        raise HTTPException(422, f"style_weights: finite numbers with a finite sum, not {text!r}")
    style_weights_for(weights, count)  # refuses a wrong count or negative weights with a clear message
    return weights


def _sha256_of(ref: str) -> str | None:
    return ref.removeprefix(IMAGE_PREFIX) if ref.startswith(IMAGE_PREFIX) else None


def _pin_refs(services: Services, refs: list[str], pinned: list[str]) -> list[tuple[str, FilePath | None]]:
    """Each reference normalised, with the file of its stored image: ``sample:NAME`` (no file), or
    ``image:SHA256`` of a stored image (404 when there is none). The stored images are pinned (and added to
    ``pinned``): they stay while the request uses them, whatever is deleted meanwhile."""
    normalised = []
    for ref in refs:
        ref = ref.strip()
        if not is_sample(ref):
            sha256 = _sha256_of(ref.lower())
            if sha256 is None:
                raise HTTPException(422, f"{ref!r}: a reference is sample:NAME or image:SHA256")
            ref = IMAGE_PREFIX + sha256
        normalised.append(ref)
    resolved = []
    with services.store.lock, services.sessions() as session:
        for ref in normalised:
            sha256 = _sha256_of(ref)
            image = session.get(StoredImage, sha256) if sha256 else None
            if sha256 and image is None:
                raise HTTPException(404, f"no image {sha256}")
            resolved.append((ref, services.store.path(sha256, image.extension) if image else None))
        sha256s = [sha256 for sha256 in map(_sha256_of, normalised) if sha256]
        services.store.pin(sha256s)
        pinned.extend(sha256s)
    return resolved


def _ref_image(ref: str, path: FilePath | None, size: int) -> Image.Image:
    """The image of a reference of ``_pin_refs``, ready for a stylisation of ``size``."""
    if path is None:
        return _prepared(load_sample(ref), size)
    try:
        return _prepared(load_image(path), size)
    except ImageError:
        raise HTTPException(404, f"the file of image {_sha256_of(ref)} is missing from the store") from None


def _unpin(services: Services, sha256s: list[str]) -> None:
    """Give back a request's pins; the images that lost their last row meanwhile go now."""
    unused = services.store.unpin(sha256s)
    if unused:
        with services.sessions() as session:
            _forget_unused(services, session, unused)


def _input_info(ref: str) -> InputInfo:
    if is_sample(ref):
        return InputInfo(ref=ref, url=f"/api/samples/{ref.removeprefix(SAMPLE_PREFIX)}")
    return InputInfo(ref=ref, url=f"/api/images/{_sha256_of(ref)}")


def result_info(result: Result) -> ResultInfo:
    return ResultInfo(
        id=result.id, ref=IMAGE_PREFIX + result.image_sha256, url=f"/api/images/{result.image_sha256}",
        thumbnail_url=f"/api/images/{result.image_sha256}/thumbnail",
        download_name=f"brushwork-{result.id}-{result.model}.{result.image.extension}",
        width=result.image.width, height=result.image.height, content=_input_info(result.content),
        styles=[_input_info(ref) for ref in result.styles], model=result.model, method=result.method,
        alpha=result.alpha, style_weights=result.style_weights, preserve_color=result.preserve_color,
        size=result.size, seconds=result.seconds, title=result.title, created=result.created)


# ---------------------------------------------------------------------------------------------- gallery

@router.get("/results", response_model=ResultPage, tags=["gallery"])
def list_results(session: SessionDep, offset: Annotated[int, Query(ge=0, le=MAX_INTEGER)] = 0,
                 limit: Annotated[int, Query(ge=1, le=100)] = 12) -> ResultPage:
    """The gallery, newest first."""
    total = session.scalar(select(func.count()).select_from(Result))
    page = session.scalars(select(Result).order_by(Result.created.desc(), Result.id.desc()).offset(offset).limit(limit))
    return ResultPage(items=[result_info(r) for r in page], total=total, offset=offset, limit=limit)


def _result(session: Session, result_id: int) -> Result:
    # A number the database cannot hold names no result; the database would fail on it instead of finding none.
    result = session.get(Result, result_id) if abs(result_id) <= MAX_INTEGER else None
    if result is None:
        raise HTTPException(404, f"no result {result_id}")
    return result


@router.get("/results/{result_id}", response_model=ResultInfo, tags=["gallery"])
def get_result(result_id: int, session: SessionDep) -> ResultInfo:
    return result_info(_result(session, result_id))


@router.patch("/results/{result_id}", response_model=ResultInfo, tags=["gallery"])
def update_result(result_id: int, change: ResultUpdate, session: SessionDep) -> ResultInfo:
    """Give a result a title."""
    result = _result(session, result_id)
    result.title = change.title
    session.commit()
    return result_info(result)


@router.delete("/results/{result_id}", status_code=204, tags=["gallery"])
def delete_result(result_id: int, services: ServicesDep, session: SessionDep) -> None:
    """Remove a result; its image files go too unless something else still uses them."""
    with services.store.lock:
        result = _result(session, result_id)
        candidates = {result.image_sha256, *(item.image_sha256 for item in result.inputs if item.image_sha256)}
        session.delete(result)
        session.flush()
        _forget_unused(services, session, candidates)


def _forget_unused(services: Services, session: Session, candidates: set[str]) -> int:
    """Delete the images among ``candidates`` that nothing refers to any more: rows first, files once committed,
    all with the store's lock held; the number deleted. An image that a request in progress pinned goes when it is
    unpinned, if still unused then.

    A file outlives its rows only if the process dies in between; it is then unreferenced, never missing, and
    ``remove_stray_files`` removes it at the next start.
    """
    store = services.store
    with store.lock:
        unused = []
        for sha256 in candidates:
            image = session.get(StoredImage, sha256)
            in_use = image is None or image.artwork or session.scalar(select(or_(
                exists().where(Result.image_sha256 == sha256),
                exists().where(ResultInput.image_sha256 == sha256),
                exists().where(TrialItem.image_sha256 == sha256))))
            if in_use:
                continue
            if store.pinned(sha256):
                store.remove_when_unpinned(sha256)
                continue
            unused.append((sha256, image.extension))
            session.delete(image)
        session.commit()
        for sha256, extension in unused:
            store.remove(sha256, extension)
    return len(unused)


def forget_unused_uploads(services: Services, grace_s: float) -> int:
    """Delete the uploaded images that nothing uses (no result, trial or the pool of artworks) and that were
    uploaded more than ``grace_s`` seconds ago: an image uploaded to be used by reference has that long to be
    used. Returns how many went; at most SWEEP_BATCH."""
    cutoff = utcnow() - timedelta(seconds=grace_s)
    used = or_(exists().where(Result.image_sha256 == StoredImage.sha256),
               exists().where(ResultInput.image_sha256 == StoredImage.sha256),
               exists().where(TrialItem.image_sha256 == StoredImage.sha256))
    with services.sessions() as session:
        candidates = set(session.scalars(
            select(StoredImage.sha256).where(StoredImage.origin == "upload", StoredImage.artwork.is_(False),
                                             StoredImage.created < cutoff, ~used).limit(SWEEP_BATCH)))
        return _forget_unused(services, session, candidates) if candidates else 0


def remove_stray_files(services: Services) -> int:
    """Remove the files of the store that no row names: left by a process killed between writing a file and
    committing its row, or while writing it (a temporary ``.*.part``). For the start, before any request: none of
    them can then belong to a request in progress (one server per data folder). Returns how many went."""
    store = services.store
    with services.sessions() as session:
        known = {store.path(sha256, extension)
                 for sha256, extension in session.execute(select(StoredImage.sha256, StoredImage.extension))}
    stray = [path for path in store.files() if path not in known]
    for path in stray:
        store.remove_file(path)
    return len(stray)


# ---------------------------------------------------------------------------------------------- study

@router.get("/study/artworks", response_model=list[ImageInfo], tags=["study"])
def list_artworks(session: SessionDep) -> list[ImageInfo]:
    """The real artworks the deception study mixes with stylisations."""
    return [image_info(i) for i in session.scalars(select(StoredImage).where(StoredImage.artwork)
                                                   .order_by(StoredImage.created))]


@router.delete("/study/artworks/{sha256}", status_code=204, tags=["study"])
def remove_artwork(sha256: Sha256, services: ServicesDep, session: SessionDep) -> None:
    """Take an image out of the pool of real artworks (a photo uploaded as a style, say)."""
    with services.store.lock:
        image = session.get(StoredImage, sha256)
        if image is None or not image.artwork:
            raise HTTPException(404, f"no artwork {sha256}")
        image.artwork = False
        _forget_unused(services, session, {sha256})


bearer = HTTPBearer(auto_error=False, description="The token of POST /api/study/participants.")


def _charge_address(request: Request, services: ServicesDep) -> None:
    address = request.client.host if request.client else "unknown"
    services.limits.charge("address " + address, services.settings.study_requests_per_address, "this address")


def get_participant(services: ServicesDep, session: SessionDep,
                    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
                    _: Annotated[None, Depends(_charge_address)]) -> Participant:
    """The participant whose token the request carries (``Authorization: Bearer TOKEN``), within its rate."""
    participant = study.participant_of(session, credentials.credentials) if credentials else None
    if participant is None:
        raise HTTPException(401, "the study needs a participant token from POST /api/study/participants, sent as "
                                 "'Authorization: Bearer TOKEN'" if credentials is None else
                                 "unknown participant token; get a new one from POST /api/study/participants",
                            headers={"WWW-Authenticate": "Bearer"})
    services.limits.charge("participant " + participant.id, services.settings.study_requests_per_participant,
                           "this participant")
    return participant


ParticipantDep = Annotated[Participant, Depends(get_participant)]


@router.post("/study/participants", status_code=201, response_model=NewParticipant, tags=["study"],
             responses=STUDY_ERRORS, dependencies=[Depends(_charge_address)])
def create_participant(session: SessionDep) -> NewParticipant:
    """Join the study: a token to send with every trial and answer, and the id the results show."""
    participant, token = study.new_participant(session)
    return NewParticipant(token=token, id=participant.id)


def trial_info(trial: Trial) -> TrialInfo:
    return TrialInfo(id=trial.id, study=trial.study, answered=trial.answered is not None,
                     items=[TrialItemInfo(position=i.position, url=f"/api/study/trials/{trial.id}/images/{i.position}")
                            for i in trial.items])


@router.post("/study/trials", status_code=201, response_model=TrialInfo, tags=["study"], responses=STUDY_ERRORS)
def create_trial(request: TrialRequest, participant: ParticipantDep, services: ServicesDep,
                 session: SessionDep) -> TrialInfo:
    """A new trial drawn from the gallery at random, for this participant alone; 409 when the gallery has too
    little for one."""
    with services.store.lock:  # its items refer to images: none may go between drawing them and the commit
        return trial_info(study.new_trial(session, request.study, request.count, services.rng, participant))


def _trial(session: Session, trial_id: str) -> Trial:
    trial = session.get(Trial, trial_id)
    if trial is None:
        raise HTTPException(404, f"no trial {trial_id}")
    return trial


@router.get("/study/trials/{trial_id}", response_model=TrialInfo, tags=["study"], responses=STUDY_ERRORS)
def get_trial(trial_id: str, participant: ParticipantDep, session: SessionDep) -> TrialInfo:
    """One of this participant's trials."""
    trial = _trial(session, trial_id)
    study.check_owner(trial, participant)
    return trial_info(trial)


@router.get("/study/trials/{trial_id}/images/{position}", response_class=Response, tags=["study"],
            responses={200: {"content": {"image/jpeg": {}}}})
def get_trial_image(trial_id: str, position: int, services: ServicesDep, session: SessionDep) -> Response:
    """An image of a trial, as a fresh copy that no gallery file equals (an ``<img>`` sends no token: the
    trial's id, known to its participant only, is the key)."""
    trial = _trial(session, trial_id)
    item = next((item for item in trial.items if item.position == position), None)
    if item is None:
        raise HTTPException(404, f"no image at position {position} of trial {trial_id}")
    try:
        image = load_image(services.store.path(item.image_sha256, item.image.extension))
    except ImageError:
        raise HTTPException(404, "the file of this image is missing from the store") from None
    return Response(study.blind_copy(image, study.trial_image_side(trial)), media_type="image/jpeg",
                    headers={"Cache-Control": "private, no-store"})


@router.post("/study/trials/{trial_id}/answer", response_model=TrialInfo, tags=["study"], responses=STUDY_ERRORS)
def answer_trial(trial_id: str, answer: Answer, participant: ParticipantDep, session: SessionDep) -> TrialInfo:
    """Record the answer to one of this participant's trials, once: 409 when it was answered already."""
    trial = _trial(session, trial_id)
    study.answer(session, trial, answer.picked, participant)
    return trial_info(trial)


@router.get("/study/results", response_model=StudyResults, tags=["study"])
def study_results(session: SessionDep) -> dict:
    """Preference and deception rates per condition, with 95% Wilson intervals, and what each participant
    answered."""
    return study.results(session)


@router.get("/study/answers.csv", response_class=Response, tags=["study"],
            responses={200: {"content": {"text/csv": {}}}})
def study_answers(session: SessionDep) -> Response:
    """Every answer, one row per image shown, for analysis elsewhere."""
    return Response(study.answers_csv(session), media_type="text/csv",
                    headers={"Content-Disposition": 'attachment; filename="brushwork-study-answers.csv"'})


@router.get("/health", response_model=Health, tags=["about"])
def health(services: ServicesDep) -> Health:
    queue = services.queue
    return Health(status="ok", workers=queue.workers, pending=queue.pending, capacity=queue.capacity,
                  dropped=queue.dropped, stored_bytes=services.store.used, storage_quota=services.store.quota)

"""The FastAPI application: the REST API, the web page, and errors as one-line JSON, never a traceback."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import random
import re
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlsplit

import anyio
import fastapi_offline
import torch
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocketClose

from .. import __version__
from ..errors import BrushworkError
from . import live, routes
from .db import connect
from .inference import ClientGone, InferenceQueue, ModelUnavailable, QueueFull
from .limits import RateLimit
from .previews import PreviewClients
from .settings import Settings
from .storage import DISK_FULL, ImageStore, StorageFull, no_room

STATIC = Path(__file__).parent / "static"
log = logging.getLogger("brushwork.server")


def create_app(settings: Settings | None = None) -> FastAPI:
    """The app over a data folder and database; everything in them survives a restart."""
    settings = settings or Settings()
    allowed_hosts = parse_allowed_hosts(settings.allowed_hosts)
    data_dir = Path(settings.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    services = routes.Services(
        settings=settings,
        store=ImageStore(data_dir / "images", settings.storage_quota),
        sessions=connect(settings.database),
        queue=InferenceQueue(settings.workers, settings.queue_size, settings.device, settings.weights_dirs),
        rng=random.Random(),
        limits=RateLimit(),
        decodes=asyncio.Semaphore(settings.concurrent_decodes),
        previews=PreviewClients(settings.preview_clients, int(settings.preview_cache_mb * 2**20),
                                keep=2 + routes.MAX_STYLES),
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        removed = await run_in_threadpool(routes.remove_stray_files, services)
        if removed:
            log.warning("removed %d image files that no row names (left by an interrupted server)", removed)
        cleaner = asyncio.create_task(clean_up_unused_uploads(services))
        yield
        cleaner.cancel()
        services.queue.close()
        services.sessions.kw["bind"].dispose()

    app = FastAPI(
        title="brushwork", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
        description="Neural style transfer: stylise photos with MicroAST, AdaIN or Gatys, keep the results in a "
                    "gallery, and measure preference and deception rates with real people.",
    )
    app.state.services = services
    api_page_html = get_swagger_ui_html(openapi_url=app.openapi_url, title="brushwork API",
                                        swagger_js_url="/docs-assets/swagger-ui-bundle.js",
                                        swagger_css_url="/docs-assets/swagger-ui.css",
                                        swagger_favicon_url="/docs-assets/favicon.png").body
    app.add_middleware(BodyLimit, max_bytes=settings.max_upload_bytes)
    app.add_middleware(BodyTimeout, seconds=settings.body_timeout)
    # Outside the body limit: a request from an unknown host or another site is refused before its body is read.
    app.add_middleware(HostAndOriginCheck, allowed_hosts=allowed_hosts)
    app.add_middleware(UnexpectedErrors)
    # Added last, so outermost: every refusal above has the headers too.
    app.add_middleware(SecurityHeaders, policy=content_security_policy(api_page_html))
    app.include_router(routes.router)
    app.include_router(live.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    # The API page's Swagger UI (version 5, which reads OpenAPI 3.1) from a package, not a CDN: it works on a
    # machine with no internet.
    app.mount("/docs-assets", StaticFiles(directory=Path(fastapi_offline.__file__).parent / "static"),
              name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    def api_page() -> HTMLResponse:
        return HTMLResponse(api_page_html)

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    _add_error_handlers(app)
    return app


async def clean_up_unused_uploads(services: routes.Services) -> None:
    """Delete unused uploads past their grace period now, then every half grace period (at most every hour)."""
    grace = services.settings.unused_upload_grace
    while True:
        try:
            removed = await run_in_threadpool(routes.forget_unused_uploads, services, grace)
            if removed:
                log.info("deleted %d uploaded images that no result used within %g hours", removed, grace / 3600)
        except Exception:  # the next sweep tries again; the server goes on
            log.exception("the clean-up of unused uploads failed")
        await asyncio.sleep(min(max(grace / 2, 0.5), 3600))


def content_security_policy(api_page_html: bytes) -> str:
    """What the pages may load: this server's scripts, styles and images (uploads are previewed as blob: URLs),
    and the API page's one inline script, by its hash. No page may be shown in another site's frame, where it
    could be overlaid to trick clicks."""
    inline = re.findall(rb"<script>(.*?)</script>", api_page_html, re.DOTALL)
    hashes = " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(script).digest()).decode()}'" for script in inline)
    return (f"default-src 'self'; script-src 'self' {hashes}; img-src 'self' data: blob:; object-src 'none'; "
            "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        return JSONResponse({"detail": error.detail}, status_code=error.status_code, headers=error.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        problems = []
        for problem in error.errors():
            where = ".".join(str(part) for part in problem["loc"][1:]) or problem["loc"][0]
            problems.append(f"{where}: {problem['msg']}")
        return JSONResponse({"detail": "; ".join(problems)}, status_code=422)

    @app.exception_handler(ModelUnavailable)
    async def no_weights(request: Request, error: ModelUnavailable) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=503)

    @app.exception_handler(BrushworkError)
    async def bad_input(request: Request, error: BrushworkError) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=422)

    @app.exception_handler(StorageFull)
    async def no_room_left(request: Request, error: StorageFull) -> JSONResponse:
        log.error("no room to store on %s %s: %s", request.method, request.url.path, error)
        return JSONResponse({"detail": str(error)}, status_code=507)

    @app.exception_handler(ClientGone)
    async def client_gone(request: Request, error: ClientGone) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=499)  # nginx's code; no one is there to read it

    @app.exception_handler(QueueFull)
    async def busy(request: Request, error: QueueFull) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=503, headers={"Retry-After": "5"})

    @app.exception_handler(MemoryError)
    @app.exception_handler(torch.OutOfMemoryError)
    async def out_of_memory(request: Request, error: Exception) -> JSONResponse:
        log.error("out of memory on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": "out of memory; try a smaller size"}, status_code=503)



class UnexpectedErrors:
    """Any other exception as a JSON 500 (or 507 when it is a write that found the disk full), its traceback in
    the server's log (only there), and the connection kept open. (Starlette's own last handler raises the
    exception again after answering, and the server then drops the connection without a ``Connection: close``: a
    keep-alive client's next request on it fails.)"""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watched)
        except Exception as error:
            if started:  # half an answer is out: only closing the connection can tell the client
                raise
            if no_room(error):  # a write elsewhere than the gallery's (the study's rows, say) found the disk full
                log.error("no room to store on %s %s: %s", scope["method"], scope["path"], error)
                answer = JSONResponse({"detail": DISK_FULL}, status_code=507)
            else:
                log.exception("unexpected error on %s %s", scope["method"], scope["path"])
                answer = JSONResponse({"detail": "internal server error; the server's log has the details"},
                                      status_code=500)
            await answer(scope, receive, send)


class SecurityHeaders:
    """``nosniff`` on every answer, so that a browser never runs an uploaded image or a JSON answer as a script
    or page; the content security policy on HTML pages."""

    def __init__(self, app: ASGIApp, policy: str):
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["X-Content-Type-Options"] = "nosniff"
                if headers.get("content-type", "").startswith("text/html"):
                    headers["Content-Security-Policy"] = self.policy
            await send(message)

        await self.app(scope, receive, with_headers)


#: The port a URL or a Host header without one means.
DEFAULT_PORTS = {"http": 80, "https": 443}
_HOST = re.compile(r"(\[[0-9a-f:.]+\]|[^:\[\]/@]+)(?::([0-9]{1,5}))?")


def host_and_port(text: str, default_port: int | None) -> tuple[str, int | None] | None:
    """``name[:port]`` (IPv6 bracketed) as a lower-case name without a final dot, and the port; None if malformed."""
    match = _HOST.fullmatch(text.strip().lower())
    if match is None:
        return None
    name, port = match.groups()
    return name.rstrip("."), int(port) if port else default_port


def parse_allowed_hosts(entries: list[str]) -> list[tuple[str, int | None]]:
    """Each allowed host as a name and a port (None: any port)."""
    parsed = [host_and_port(entry, None) for entry in entries]
    for entry, address in zip(entries, parsed):
        if address is None or not address[0]:
            raise BrushworkError(f"allowed host {entry!r}: give a host name or address, with or without a port, "
                                 "like example.org or example.org:8000")
    return parsed


class HostAndOriginCheck:
    """Answer only under this server's own names, and take changes only from its own pages.

    A Host header that ``allowed_hosts`` does not name gets 400: a web page whose name an attacker points at this
    machine's address (DNS rebinding) reaches nothing, and no answer (a redirect, say) is built on a name the
    operator did not choose. A POST, PUT, PATCH or DELETE that a browser sends from another origin's page (its
    Origin header, or Sec-Fetch-Site, says so) gets 403: another site cannot change anything here through its
    visitors' browsers; nor open a WebSocket to it. Clients that are not browsers (curl, scripts) send neither header and are served.
    """

    WRITES = {"POST", "PUT", "PATCH", "DELETE"}

    def __init__(self, app: ASGIApp, allowed_hosts: list[tuple[str, int | None]]):
        self.app = app
        self.allowed = allowed_hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        headers = Headers(scope=scope)
        host = headers.get("host", "")
        websocket = scope["type"] == "websocket"
        if not self.allowed_host(host, DEFAULT_PORTS.get(scope["scheme"].replace("ws", "http"))):
            reason = f"this server does not answer to the host name {host[:100]!r}; its operator can allow it with " \
                     "--allowed-host"
            refusal = WebSocketClose(1008, reason) if websocket else JSONResponse({"detail": reason}, status_code=400)
        # Browsers let any page open a WebSocket to any server (no same-origin rule for them): one from another
        # site's page would spend this server's workers on that site's visitors, so it is refused like a write.
        elif (websocket or scope["method"] in self.WRITES) and not same_origin(headers, host):
            reason = "a change sent from another site's page is refused; use this server's own page"
            refusal = WebSocketClose(1008, reason) if websocket else JSONResponse({"detail": reason}, status_code=403)
        else:
            return await self.app(scope, receive, send)
        await refusal(scope, receive, send)

    def allowed_host(self, host: str, default_port: int | None) -> bool:
        address = host_and_port(host, default_port)
        return address is not None and any(name == address[0] and port in (None, address[1])
                                           for name, port in self.allowed)


def same_origin(headers: Headers, host: str) -> bool:
    """A request is from this server's own page, or from no page (no Origin, no Sec-Fetch-Site)."""
    if headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        return False
    origin = headers.get("origin")
    if origin is None:
        return True
    try:
        scheme, netloc, path, *_ = urlsplit(origin)
    except ValueError:  # a malformed bracketed address
        return False
    if scheme not in DEFAULT_PORTS or path:  # "null" (a sandboxed frame, a file:// page) is no origin of ours
        return False
    # A browser leaves out the port its page's scheme implies, in Origin and in Host alike.
    mine = host_and_port(host, DEFAULT_PORTS[scheme])
    return mine is not None and host_and_port(netloc, DEFAULT_PORTS[scheme]) == mine


class BodyLimit:
    """Refuse a request body over the limit with a JSON 413: at once when its Content-Length says so, else as
    soon as the bytes read pass the limit (FastAPI's own limit answers in plain text)."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes
        self.message = f"the request is larger than this server's limit of {max_bytes / 2**20:g} MB"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = Headers(scope=scope).get("content-length", "")
        if length.isdigit() and int(length) > self.max_bytes:
            return await JSONResponse({"detail": self.message}, status_code=413)(scope, receive, send)
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise HTTPException(413, self.message)
            return message

        await self.app(scope, limited, send)


class BodyTimeout:
    """Answer 408 and close the connection when a request's body has not all arrived ``seconds`` after its
    headers: a slow or stalled client cannot hold a connection (and the part of an upload it sent) for ever."""

    def __init__(self, app: ASGIApp, seconds: float):
        self.app = app
        self.seconds = seconds
        self.message = f"the request's body did not arrive within {seconds:g} s"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        deadline = anyio.current_time() + self.seconds
        complete = False

        async def timed() -> Message:
            nonlocal complete
            if complete:  # what comes after the body (a disconnect) may take as long as the answer does
                return await receive()
            with anyio.move_on_after(deadline - anyio.current_time()) as waiting:
                message = await receive()
            if waiting.cancelled_caught:
                raise HTTPException(408, self.message, headers={"Connection": "close"})
            complete = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        await self.app(scope, timed, send)

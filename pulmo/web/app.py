"""The FastAPI application: state, dependencies (database session, the signed-in user, roles,
CSRF), error answers, security headers, and the routers of :mod:`pulmo.web.api` and
:mod:`pulmo.web.pages`."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.datastructures import MutableHeaders
from starlette.middleware.gzip import GZipMiddleware
from sqlalchemy.orm import Session

from pulmo import DISCLAIMER, __version__
from pulmo.errors import PulmoError
from pulmo.web import i18n
from pulmo.web.db import make_engine, migrate, session_factory
from pulmo.web.models import User
from pulmo.web.services import accounts
from pulmo.web.services.accounts import AccountError
from pulmo.web.services.ingest import IngestError
from pulmo.web.settings import Settings
from pulmo.web.storage import StorageError, make_storage

log = logging.getLogger("pulmo.web")
STATIC = Path(__file__).resolve().parent / "static"
SESSION_COOKIE = "pulmo_session"
LANG_COOKIE = "pulmo_lang"
CSRF_HEADER = "x-csrf-token"
UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}


@dataclass
class Principal:
    """Who is asking: the user, and how (``"token"``: an API bearer token; ``"session"``: the
    browser's cookie, whose unsafe requests must carry the session's CSRF token)."""

    user: User
    via: str
    csrf: str = ""
    session_token: str = ""


class ChunkedBodyLimit:
    """ASGI middleware: a request body sent without Content-Length (chunked, as DICOMweb clients
    stream STOW-RS) is counted while it is read; past ``limit`` bytes the route sees the client
    gone and the answer is 413 (a body with Content-Length is checked before it is read)."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or any(k == b"content-length" for k, _ in scope["headers"]):
            return await self.app(scope, receive, send)
        seen, over = 0, False

        async def counted():
            nonlocal seen, over
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    over = True
                    return {"type": "http.disconnect"}
            return message

        async def unless_over(message):
            if not over:
                await send(message)

        try:
            await self.app(scope, counted, unless_over)
        except Exception:
            if not over:
                raise
        if over:
            await JSONResponse({"detail": f"the request is larger than the upload limit of "
                                          f"{self.limit // 2**20 - 1} MiB"}, status_code=413)(scope, receive, send)


SECURITY_HEADERS = (
    ("x-content-type-options", "nosniff"), ("x-frame-options", "DENY"), ("referrer-policy", "no-referrer"))
CSP = ("default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
       "object-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")


class LimitsAndHeaders:
    """ASGI middleware: a body declared larger than the upload limit is refused before it is
    read (413; a Content-Length that is not a number, 400), and every answer gets the security
    headers and, unless it set its own (the OHIF viewer, the API documentation), the strict
    Content-Security-Policy. Plain ASGI: it costs next to nothing per request."""

    def __init__(self, app, limit: int, limit_mb: float):
        self.app, self.limit, self.limit_mb = app, limit, limit_mb

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        for key, value in scope["headers"]:
            if key == b"content-length":
                try:
                    too_big = int(value) > self.limit
                except ValueError:
                    return await JSONResponse({"detail": "invalid Content-Length"}, status_code=400)(scope, receive, send)
                if too_big:
                    detail = localised(Request(scope), f"the request is larger than the upload limit of "
                                                       f"{self.limit_mb:.0f} MiB")
                    return await JSONResponse({"detail": detail}, status_code=413)(scope, receive, send)
        docs = scope["path"].startswith("/api/docs")

        async def with_headers(message):
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for key, value in SECURITY_HEADERS:
                    headers.setdefault(key, value)
                if not docs:
                    headers.setdefault("content-security-policy", CSP)
            await send(message)

        await self.app(scope, receive, with_headers)


def create_app(settings: Settings) -> FastAPI:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.url)
    migrate(engine)
    app = FastAPI(title="Pulmo", version=__version__, description=DISCLAIMER, docs_url="/api/docs",
                  redoc_url=None, openapi_url="/api/openapi.json")
    app.state.settings = settings
    app.state.engine = engine
    dispatcher = None
    if settings.task_queue == "procrastinate":  # jobs go to workers on any machine, after each commit
        from pulmo.web import task_queue

        task_queue.ensure_schema(settings, engine)
        dispatcher = task_queue.Dispatcher(settings)
    app.state.dispatcher = dispatcher
    app.state.sessions = session_factory(engine, on_new_jobs=dispatcher)
    app.state.storage = make_storage(settings)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    mount_ohif(app)
    app.add_middleware(GZipMiddleware, minimum_size=2048, compresslevel=1)
    app.add_middleware(ChunkedBodyLimit, limit=int(settings.max_upload_mb * 2**20) + (1 << 20))

    app.add_middleware(LimitsAndHeaders, limit=int(settings.max_upload_mb * 2**20) + (1 << 20),
                       limit_mb=settings.max_upload_mb)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request, exc: StarletteHTTPException):
        if isinstance(exc.detail, str):
            exc = StarletteHTTPException(exc.status_code, localised(request, exc.detail), headers=exc.headers)
        return await http_exception_handler(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request, exc: RequestValidationError):
        """What was wrong with the request, without echoing what was sent (it may be huge, a
        secret, or not even encodable)."""
        def clean(v) -> str:
            return str(v).encode("utf-8", "replace").decode("utf-8")[:200]
        errors = [{"loc": [clean(x) for x in e.get("loc", ())], "msg": localised(request, clean(e.get("msg", ""))),
                   "type": clean(e.get("type", ""))} for e in exc.errors()[:20]]
        return JSONResponse({"detail": errors}, status_code=422)

    @app.exception_handler(OverflowError)
    async def _overflow(request, exc: OverflowError):
        return JSONResponse({"detail": localised(request, "a number in the request is too large")}, status_code=422)

    @app.exception_handler(AccountError)
    async def _account(request, exc: AccountError):
        return JSONResponse({"detail": localised(request, str(exc))}, status_code=exc.status)

    @app.exception_handler(IngestError)
    async def _ingest(request, exc: IngestError):
        return JSONResponse({"detail": localised(request, str(exc))}, status_code=exc.status)

    @app.exception_handler(StorageError)
    async def _storage(request, exc: StorageError):
        log.error("object store: %s", exc)
        return JSONResponse({"detail": localised(request, "the platform's file store is not reachable; try again "
                                                          "later")}, status_code=503)

    @app.exception_handler(PulmoError)
    async def _pulmo(request, exc: PulmoError):
        return JSONResponse({"detail": localised(request, str(exc))}, status_code=400)

    from pulmo.web.api import register as register_api
    from pulmo.web.pages import register as register_pages

    register_api(app)
    register_pages(app)
    return app


OHIF_CSP = ("default-src 'self'; script-src 'self' 'unsafe-eval' 'wasm-unsafe-eval'; style-src 'self' 'unsafe-inline'; "
            "img-src 'self' data: blob:; font-src 'self' data:; connect-src 'self' data: blob:; "
            "worker-src 'self' blob:; object-src 'none'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'")


class ViewerFiles(StaticFiles):
    """The OHIF viewer's files under ``/ohif`` with the CSP it needs (WebAssembly, React's inline
    styles, blob workers); a path without a file extension is the single-page app's index.html."""

    async def get_response(self, path: str, scope):
        from starlette.exceptions import HTTPException as StarletteHTTPException

        try:
            response = await super().get_response(path, scope)
        except StarletteHTTPException as exc:
            if exc.status_code != 404 or "." in path.rsplit("/", 1)[-1]:
                raise
            response = await super().get_response("index.html", scope)
        response.headers["Content-Security-Policy"] = OHIF_CSP
        return response


def mount_ohif(app: FastAPI) -> None:
    """Serve the OHIF viewer at ``/ohif/`` when it is installed (``scripts/build_ohif.sh`` puts it
    in ``pulmo/web/ohif``, or in ``$PULMO_OHIF_DIR``); it reads the studies from ``/dicomweb``."""
    folder = Path(os.environ.get("PULMO_OHIF_DIR") or Path(__file__).resolve().parent / "ohif")
    if (folder / "index.html").is_file():
        app.mount("/ohif", ViewerFiles(directory=folder, html=True), name="ohif")


# ----------------------------------------------------------------------------- dependencies
def db(request: Request) -> Iterator[Session]:
    """A database session for the request, committed when the route returns, rolled back on error."""
    with request.app.state.sessions() as session:
        with session.begin():
            yield session


def localised(request: Request, message: str) -> str:
    """A message for the caller in their language: the language chosen on the pages (a cookie,
    set at sign-in and when switching), else the one the client asks for (Accept-Language),
    else English. API clients that send neither get English."""
    lang = i18n.pick(request.cookies.get(LANG_COOKIE), request.headers.get("accept-language"))
    return i18n.translate_message(lang, message) if lang != i18n.DEFAULT else message


def client_address(request: Request) -> str:
    return (request.client.host if request.client else "")[:64]


def bearer_token(request: Request) -> str:
    auth = request.headers.get("authorization", "")
    return auth[7:].strip() if auth[:7].lower() == "bearer " else ""


async def csrf_sent(request: Request) -> str:
    """The CSRF token a browser request carries: the ``X-CSRF-Token`` header (scripts) or the
    ``csrf`` field of a form (pages without scripts)."""
    sent = request.headers.get(CSRF_HEADER, "")
    if sent or request.method not in UNSAFE:
        return sent
    ctype = request.headers.get("content-type", "")
    if ctype.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        form = await request.form()
        value = form.get("csrf")
        return value if isinstance(value, str) else ""
    return ""


def optional_principal(request: Request, sent: str = Depends(csrf_sent),
                       session: Session = Depends(db, scope="function")) -> Principal | None:
    token = bearer_token(request)
    if token:
        user = accounts.token_user(session, token)
        if user is None:
            raise HTTPException(401, "the bearer token is invalid, expired or revoked",
                                headers={"WWW-Authenticate": "Bearer"})
        return Principal(user, "token")
    cookie = request.cookies.get(SESSION_COOKIE, "")
    found = accounts.session_user(session, cookie)
    if found is None:
        return None
    user, ws = found
    if request.method in UNSAFE:
        if not sent or sent != ws.csrf:
            raise HTTPException(403, "missing or wrong CSRF token (reload the page)")
    return Principal(user, "session", ws.csrf, cookie)


def principal(p: Principal | None = Depends(optional_principal)) -> Principal:
    if p is None:
        raise HTTPException(401, "sign in first (a bearer token, or the web login)",
                            headers={"WWW-Authenticate": "Bearer"})
    return p


def require_roles(*roles: str):
    def check(p: Principal = Depends(principal)) -> Principal:
        if p.user.role not in roles:
            raise HTTPException(403, f"this needs the role {' or '.join(roles)}")
        return p
    return check


def login_redirect(request: Request) -> RedirectResponse:
    return RedirectResponse(f"/login?next={request.url.path}", status_code=303)

"""HTML pages (Jinja2, autoescaped): login, worklist, study (viewer and report), triage
calculator, administration, share links. Pages are thin: they render what the API and the
services give; their scripts call the JSON API with the session's CSRF token."""

from __future__ import annotations

import importlib
from pathlib import Path
from urllib.parse import quote

from fastapi import APIRouter, Depends, FastAPI, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from sqlalchemy.orm import Session

from pulmo import DISCLAIMER, __version__
from pulmo.web import i18n
from pulmo.web.app import LANG_COOKIE, SESSION_COOKIE, Principal, client_address, db, optional_principal
from pulmo.web.services import accounts, audit
from pulmo.web.services.accounts import AccountError
from pulmo.web.services.security import new_token, same

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).resolve().parent / "templates"))
LOGIN_CSRF = "pulmo_login_csrf"
PAGE_MODULES = ("pages_study", "pages_triage", "pages_admin", "pages_share", "pages_upload")

router = APIRouter(include_in_schema=False)


def language(request: Request, p: Principal | None) -> str:
    if p is not None:
        return p.user.language
    return i18n.pick(request.cookies.get(LANG_COOKIE), request.headers.get("accept-language"))


def render(request: Request, template: str, p: Principal | None, status: int = 200, **context) -> HTMLResponse:
    """A page in the user's language, with the disclaimer, the CSRF token and the user."""
    lang = language(request, p)

    def _(message: str, **values) -> str:
        return i18n.translate(lang, message, **values) if values else i18n.translate_message(lang, message)

    response = TEMPLATES.TemplateResponse(request, template, {
        "_": _, "lang": lang, "languages": i18n.LANGUAGES, "user": p.user if p else None,
        "csrf": p.csrf if p else "", "disclaimer": _(DISCLAIMER), "version": __version__, **context},
        status_code=status)
    response.headers["Cache-Control"] = "no-store"
    return response


def sign_in_first(request: Request) -> RedirectResponse:
    return RedirectResponse(f"/login?next={quote(request.url.path)}", status_code=303)


def safe_next(target: str | None) -> str:
    """Only a path on this site (no scheme, no host, no //): an open redirect is refused."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/"


@router.get("/login")
def login_page(request: Request, next: str = "/", p: Principal | None = Depends(optional_principal)):
    if p is not None:
        return RedirectResponse(safe_next(next), status_code=303)
    token = new_token(24)
    response = render(request, "login.html", None, next=safe_next(next), login_csrf=token, error="")
    response.set_cookie(LOGIN_CSRF, token, httponly=True, samesite="strict",
                        secure=request.app.state.settings.secure_cookies)
    return response


@router.post("/login")
def login(request: Request, username: str = Form("", max_length=200), password: str = Form("", max_length=1000),
          next: str = Form("/", max_length=500), login_csrf: str = Form("", max_length=100),
          session: Session = Depends(db, scope="function")):
    settings = request.app.state.settings
    cookie = request.cookies.get(LOGIN_CSRF, "")
    if not cookie or not same(cookie, login_csrf):
        return render(request, "login.html", None, status=400, next=safe_next(next), login_csrf=cookie,
                      error="The login form expired; please try again.")
    try:
        user = accounts.authenticate(session, username, password, client_address(request),
                                     settings.login_attempts, settings.login_window_min)
    except AccountError as exc:
        return render(request, "login.html", None, status=exc.status, next=safe_next(next), login_csrf=cookie,
                      error=str(exc))
    token, _ = accounts.new_session(session, user, settings.session_hours)
    response = RedirectResponse(safe_next(next), status_code=303)
    response.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="lax", secure=settings.secure_cookies,
                        max_age=int(settings.session_hours * 3600))
    response.delete_cookie(LOGIN_CSRF)
    response.set_cookie(LANG_COOKIE, user.language, samesite="lax", max_age=3600 * 24 * 365,
                        secure=settings.secure_cookies)   # the user's language, for messages too
    return response


@router.post("/logout")
def logout(request: Request, p: Principal | None = Depends(optional_principal), session: Session = Depends(db, scope="function")):
    if p is not None and p.via == "session":
        accounts.end_session(session, p.session_token)
        audit.record(session, "logout", p.user, "user", p.user.id, client_address(request))
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE)
    return response


@router.post("/language")
def set_language(request: Request, language: str = Form("en", max_length=10), next: str = Form("/", max_length=500),
                 p: Principal | None = Depends(optional_principal), session: Session = Depends(db, scope="function")):
    """Switch the language: remembered on the user (and in a cookie, for pages before login)."""
    lang = language if language in i18n.LANGUAGES else i18n.DEFAULT
    if p is not None:
        accounts.set_language(session, p.user, lang)
    response = RedirectResponse(safe_next(next), status_code=303)
    response.set_cookie(LANG_COOKIE, lang, samesite="lax", max_age=3600 * 24 * 365,
                        secure=request.app.state.settings.secure_cookies)
    return response


@router.get("/")
def worklist(request: Request, p: Principal | None = Depends(optional_principal)):
    if p is None:
        return sign_in_first(request)
    return render(request, "worklist.html", p)


@router.get("/healthz")
def health(request: Request, session: Session = Depends(db, scope="function")) -> Response:
    from sqlalchemy import text

    session.execute(text("SELECT 1"))
    return Response("ok", media_type="text/plain")


def register(app: FastAPI) -> None:
    app.include_router(router)
    for name in PAGE_MODULES:
        try:
            module = importlib.import_module(f"pulmo.web.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"pulmo.web.{name}":
                raise
            continue
        app.include_router(module.router)

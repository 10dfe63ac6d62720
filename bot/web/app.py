"""The dashboard: server-rendered pages (Jinja2, no build step, no script) that are the chat's own commands and
views rendered as HTML (bot.web.render), so chat, API and web never disagree.

    GET  /web/login?token=T   a one-time link from /web in chat (10 minutes, once) -> a session cookie
    GET  /web                 the active signals (/signals)
    GET  /web/run?text=CMD    a read command (/signal AAPL, /similar ID, /performance 30d, /portfolio, ...)
    POST /web/run  text=CMD   a button's write (/feedback ID took, /watchlist add NVDA): forms on our pages only
    GET  /web/prefs           the preferences and a form; POST changes one through /prefs
    GET  /web/logout

The session is a JWT (HS256, `SIGNALBOT_WEB_SECRET`, 30 days) in an HttpOnly, SameSite=Lax cookie, so no
password exists; a request without one is told how to get a link. A downgrade or /stop is seen at once: each
request reads the user.
"""
import logging
import secrets
import time
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import jwt
from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from bot.api.access import caller_of
from bot.commands.registry import dispatch
from bot.views.doc import Doc
from bot.web.render import doc_html, runs_by_form, runs_by_link
from core.domain import User

if TYPE_CHECKING:
    from bot.services import Services

log = logging.getLogger(__name__)

COOKIE = "sb_session"
SESSION_DAYS = 30
LOGIN_TTL = timedelta(minutes=10)
PREF_KEYS = ("confidence", "risk", "assets", "timeframes", "symbols", "quiet")
TEMPLATES = Environment(loader=FileSystemLoader(Path(__file__).parent / "templates"),
                        autoescape=select_autoescape(["html"]))


class Web:
    def __init__(self, services: "Services") -> None:
        self.services = services
        secret = services.settings.web_secret
        self._secret = secret.get_secret_value() if secret is not None else secrets.token_urlsafe(32)
        self.router = APIRouter(prefix="/web", include_in_schema=False)
        self._routes()

    # -- sessions --------------------------------------------------------------------------------
    def session_token(self, user_id: int) -> str:
        now = int(time.time())
        return jwt.encode({"sub": str(user_id), "iat": now, "exp": now + SESSION_DAYS * 86400}, self._secret,
                          algorithm="HS256")

    async def user_of(self, request: Request) -> User | None:
        token = request.cookies.get(COOKIE)
        if not token:
            return None
        try:
            claims = jwt.decode(token, self._secret, algorithms=["HS256"], options={"require": ["exp", "sub"]})
            user_id = int(claims["sub"])
        except (jwt.PyJWTError, ValueError):
            return None
        user = await self.services.store.users.get_user(user_id)
        return user if user is not None and user.active else None

    async def run(self, user: User, text: str) -> Doc:
        return await dispatch(self.services.registry, self.services, caller_of(user), text)

    def page(self, user: User, title: str, content: str, *, flash: str = "", form: str = "",
             status: int = 200) -> HTMLResponse:
        html = TEMPLATES.get_template("page.html").render(title=title, who=user.display_name or f"user {user.id}",
                                                          content=content, flash=flash, form=form)
        return HTMLResponse(html, status_code=status)

    # -- routes ----------------------------------------------------------------------------------
    def _routes(self) -> None:
        r = self.router

        @r.get("/login")
        async def login(token: str = "") -> Response:
            user_id = await self.services.store.web_logins.redeem(token) if token else None
            if user_id is None:
                return _bare(401, "This link has expired or was used already",
                             "Send /web to the bot for a new one (each link works once, for 10 minutes).")
            response = RedirectResponse("/web", status_code=303)
            response.set_cookie(COOKIE, self.session_token(user_id), max_age=SESSION_DAYS * 86400, httponly=True,
                                samesite="lax", secure=self.services.settings.public_url.startswith("https://"))
            return response

        @r.get("/logout")
        async def logout() -> Response:
            response = RedirectResponse("/track-record", status_code=303)
            response.delete_cookie(COOKIE)
            return response

        @r.get("")
        async def home(request: Request) -> Response:
            user = await self.user_of(request)
            if user is None:
                return _login_needed()
            return self.page(user, "Signals", doc_html(await self.run(user, "/signals")))

        @r.get("/run")
        async def run_command(request: Request, text: str = "") -> Response:
            user = await self.user_of(request)
            if user is None:
                return _login_needed()
            name = text.strip().lstrip("/").split(" ", 1)[0].lower()
            if not runs_by_link(text) or len(text) > 300:
                doc = Doc.error("That command is not available on the web.", "The chat has every command.")
                return self.page(user, "Not here", doc_html(doc), status=400)
            doc = await self.run(user, text.strip() if text.strip().startswith("/") else "/" + text.strip())
            return self.page(user, doc.heading or name, doc_html(doc))

        @r.post("/run")
        async def run_form(request: Request, text: Annotated[str, Form(max_length=300)] = "") -> Response:
            user = await self.user_of(request)
            if user is None:
                return _login_needed()
            command = text.strip() if text.strip().startswith("/") else "/" + text.strip()
            if not runs_by_form(command):
                doc = Doc.error("That command is not available on the web.", "The chat has every command.")
                return self.page(user, "Not here", doc_html(doc), status=400)
            doc = await self.run(user, command)
            return self.page(user, doc.heading or "Done", doc_html(doc), status=400 if doc.tone == "error" else 200)

        @r.get("/prefs")
        async def prefs(request: Request) -> Response:
            user = await self.user_of(request)
            if user is None:
                return _login_needed()
            return self.page(user, "Preferences", doc_html(await self.run(user, "/prefs")), form=_prefs_form())

        @r.post("/prefs")
        async def set_pref(request: Request, key: Annotated[str, Form(max_length=20)],
                           value: Annotated[str, Form(max_length=200)] = "") -> Response:
            user = await self.user_of(request)
            if user is None:
                return _login_needed()
            if key not in PREF_KEYS:
                result = Doc.error(f"Unknown preference {key!r}.")
            else:
                result = await self.run(user, f"/prefs {key} {' '.join(value.split())}".strip())
            return self.page(user, "Preferences", doc_html(await self.run(user, "/prefs")), flash=doc_html(result),
                             form=_prefs_form(), status=200 if result.tone != "error" else 400)


def _prefs_form() -> str:
    options = "".join(f"<option value='{k}'>{k}</option>" for k in PREF_KEYS)
    return ("<section class='doc'><h2>Change a preference</h2><form method='post' action='/web/prefs'>"
            f"<label>Preference<select name='key' id='pref-key'>{options}</select></label>"
            "<label>Value<input name='value' id='pref-value' placeholder='e.g. 60, high, crypto,fx, off'></label>"
            "<button type='submit' id='pref-save'>Save</button></form></section>")


def _bare(status: int, heading: str, text: str) -> HTMLResponse:
    from html import escape

    return HTMLResponse("<!doctype html><html lang=en><meta charset=utf-8><meta name=viewport "
                        "content='width=device-width,initial-scale=1'><title>signalbot</title><body style="
                        "'font-family:system-ui,sans-serif;max-width:32em;margin:3em auto;padding:0 1em'>"
                        f"<h1>{escape(heading)}</h1><p>{escape(text)}</p><p><a href='/track-record'>The public track "
                        "record</a> needs no login.</p></body></html>", status_code=status)


def _login_needed() -> HTMLResponse:
    return _bare(401, "Log in from the chat", "Send /web to the bot: it answers with a link that logs you in here.")

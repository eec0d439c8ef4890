"""The web server around the Gradio page: cookie sessions, the login page, and the guards every request passes.

Why not the session in Gradio's `gr.State`: that state is found by the client's `session_hash`, which shows
in every queue URL (so proxy logs hold it), and the page's events can be called by name; knowing a hash
was enough to act as its user. Here the session token is a secret the browser holds in an HttpOnly,
SameSite=Strict cookie (API clients send it as `Authorization: Bearer <token>`), and Gradio is mounted with
`auth_dependency`, so every Gradio route (page, queue, API, files) checks it on every request; the page's
handlers then check it again through `LabelService`, which is where the access rules live.

The guards (`RequestGuard`, plain ASGI): request bodies over `max_request_kb` are refused with 413 before
anything parses them; Gradio's upload routes, which this app never uses, are closed; the page may not be
framed (X-Frame-Options, CSP frame-ancestors); and a refusal from the API (not logged in, forbidden, bad
field, conflict, throttled) gets its 4xx status instead of Gradio's blanket 500, so monitoring can tell a
refusal from a fault.
"""

from __future__ import annotations

import html
import json
import re
import threading
import time
from typing import Any

# At module level: FastAPI reads the routes' annotations (Request, Form) through this module's globals.
from fastapi import FastAPI, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse

from reward.app.service import LabelService, ServiceError

SESSION_COOKIE = "label_session"
CLOSED_PATHS = ("/gradio_api/upload", "/gradio_api/upload_progress")
SECURITY_HEADERS = [
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", b"frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
]
REFUSAL_TITLE = re.compile(r"^HTTP (4\d\d)$")
LOGIN_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Log in: rank model outputs</title>
<style>body{{font-family:system-ui,sans-serif;max-width:22rem;margin:4rem auto}}label,input,button{{display:block;
width:100%;margin:.4rem 0}}input,button{{padding:.5rem;font-size:1rem}}.error{{color:#b91c1c}}</style></head>
<body><h1>Rank model outputs</h1><p class="error" id="login-error">{error}</p>
<form method="post" action="{root}/login"><label>Name <input id="login-name" name="name" autocomplete="username"
required></label><label>Password <input id="login-password" name="password" type="password"
autocomplete="current-password" required></label><button id="login-btn" type="submit">Log in</button></form>
</body></html>"""


def request_token(request: Any) -> str | None:
    """The session token a request carries: `Authorization: Bearer <token>`, else the session cookie."""
    header = request.headers.get("authorization", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip()
    return request.cookies.get(SESSION_COOKIE)


def build_web_app(service: LabelService, blocks: Any, head: str | None = None, css: str | None = None) -> Any:
    """The FastAPI app: /login, /logout, /api/login, /api/logout, then the Gradio page at /, all guarded."""
    import gradio as gr

    config = service.config
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

    def client_address(request: Request) -> str:
        return request.client.host if request.client else ""

    def set_session(response: Any, token: str, request: Request) -> Any:
        response.set_cookie(
            SESSION_COOKIE,
            token,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
            max_age=int(config.session_hours * 3600),
            path="/",
        )
        return response

    @app.get("/login", response_class=HTMLResponse)
    def login_page(request: Request) -> Any:
        return HTMLResponse(LOGIN_PAGE.format(error="", root=request.scope.get("root_path", "")))

    @app.post("/login")
    def login_form(request: Request, name: str = Form(""), password: str = Form("")) -> Any:
        try:
            session = service.login(name, password, client_address(request))
        except ServiceError as err:
            page = LOGIN_PAGE.format(error=html.escape(str(err)), root=request.scope.get("root_path", ""))
            return HTMLResponse(page, status_code=err.status)
        return set_session(RedirectResponse("./", status_code=303), session["token"], request)

    @app.post("/logout")
    def logout_form(request: Request) -> Any:
        token = request_token(request)
        if service.session_name(token):
            service.logout(token)
        response = RedirectResponse("./login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    @app.post("/api/login")
    async def api_login(request: Request) -> Any:
        try:
            body = await request.json()
            if not isinstance(body, dict):
                raise ValueError
        except ValueError:
            return JSONResponse({"error": "expected a JSON object {name, password}"}, status_code=400)
        try:
            session = service.login(body.get("name"), body.get("password"), client_address(request))
        except ServiceError as err:
            return JSONResponse({"error": str(err)}, status_code=err.status)
        return set_session(JSONResponse(session), session["token"], request)

    @app.post("/api/logout")
    def api_logout(request: Request) -> Any:
        try:
            result = service.logout(request_token(request))
        except ServiceError as err:
            return JSONResponse({"error": str(err)}, status_code=err.status)
        response = JSONResponse(result)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    gr.mount_gradio_app(
        app,
        blocks,
        path="",
        auth_dependency=lambda request: service.session_name(request_token(request)),
        max_file_size="1kb",
        show_error=True,
        head=head,
        css=css,
    )
    return RequestGuard(app, service, max_body_bytes=config.max_request_kb * 1024)


class RequestGuard:
    """ASGI middleware: body-size cap, closed upload routes, page login redirect, security headers, 4xx refusals."""

    def __init__(self, app: Any, service: LabelService, max_body_bytes: int):
        self.app = app
        self.service = service
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:  # noqa: D102 (ASGI)
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if path.rstrip("/") in CLOSED_PATHS:
            await _plain(send, 404, "uploads are disabled in this app")
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_body_bytes):
            await _plain(send, 413, f"request body over {self.max_body_bytes} bytes")
            return
        body, too_big = await _read_body(receive, self.max_body_bytes)
        if too_big:
            await _plain(send, 413, f"request body over {self.max_body_bytes} bytes")
            return
        if scope["method"] == "GET" and path in ("", "/"):
            if not self.service.session_name(request_token(Request(scope))):
                await _redirect(send, "./login")
                return
        await self.app(scope, _replay(body, receive), _Responder(send, refusals="/gradio_api/" in path))


async def _read_body(receive: Any, limit: int) -> tuple[bytes, bool]:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks), False
        chunks.append(message.get("body", b""))
        size += len(chunks[-1])
        if size > limit:
            return b"", True
        if not message.get("more_body", False):
            return b"".join(chunks), False


def _replay(body: bytes, receive: Any) -> Any:
    """A `receive` giving the app the body already read, then the real `receive` (which streams wait on)."""
    sent = False

    async def replay() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


class _Responder:
    """Wraps `send`: adds the security headers; turns Gradio's 500 for a refusal into the refusal's 4xx."""

    def __init__(self, send: Any, refusals: bool):
        self.send = send
        self.refusals = refusals
        self.start: dict | None = None
        self.buffered: list[bytes] = []

    async def __call__(self, message: dict) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), *SECURITY_HEADERS]}
            if self.refusals and message["status"] == 500:
                self.start = message  # held until the body says whether it is a refusal
                return
            await self.send(message)
            return
        if message["type"] == "http.response.body" and self.start is not None:
            self.buffered.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            body = b"".join(self.buffered)
            start, self.start = self.start, None
            try:
                match = REFUSAL_TITLE.match(str(json.loads(body).get("title", "")))
            except (ValueError, AttributeError):
                match = None
            if match:
                start = {**start, "status": int(match.group(1))}
            await self.send(start)
            await self.send({"type": "http.response.body", "body": body, "more_body": False})
            return
        await self.send(message)


async def _plain(send: Any, status: int, text: str) -> None:
    body = json.dumps({"error": text}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers + SECURITY_HEADERS})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _redirect(send: Any, location: str) -> None:
    headers = [(b"location", location.encode()), (b"content-length", b"0"), *SECURITY_HEADERS]
    await send({"type": "http.response.start", "status": 303, "headers": headers})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


class Server:
    """The guarded app served by uvicorn in a background thread; `local_url`, then `close()`."""

    def __init__(self, app: Any, host: str, port: int):
        import uvicorn

        self.local_url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}/"
        self._server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def start(self, timeout_s: float = 30.0) -> Server:
        """Start serving and wait until the socket accepts connections."""
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the labeling app did not start on {self.local_url}")
            time.sleep(0.05)
        return self

    def wait(self) -> None:
        """Block until the server stops (Ctrl-C)."""
        self._thread.join()

    def close(self) -> None:
        """Stop serving and wait for the thread."""
        self._server.should_exit = True
        self._thread.join(timeout=10)

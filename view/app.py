"""The viewer's web app: aiohttp routes over one store, Jinja2 templates, and its lifecycle.

Safety, in the middleware: GET (and HEAD) only, anything else is 405; without a token the Host
header must name the loopback interface (a page of another site cannot reach the viewer by
rebinding its DNS name to 127.0.0.1); with a token, every request carries it (a cookie set from
`?token=` once, or "Authorization: Bearer"); every page is sent with a Content-Security-Policy that
allows no script and nothing from another origin. Jinja autoescapes every value. Path parameters
are only ever SQL parameters, except an eval's plot name, which must be one of its known files.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import Any, Callable

from aiohttp import web
from jinja2 import Environment, PackageLoader

from core.errors import DistillError
from view import curation_pages, eval_pages, pages, prompt_pages
from view.pages import PageError, link, path_part
from view.source import StoreSource

COOKIE = "distill_view"
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]", "::1")
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _environment() -> Environment:
    # autoescape=True for every template: each value shown comes from the store, so from a teacher.
    # A missing key renders empty (stored JSON varies by stage and version) instead of failing the page.
    env = Environment(loader=PackageLoader("view", "templates"), autoescape=True, trim_blocks=True,
                      lstrip_blocks=True)
    env.filters.update(q=path_part, num=_num, pct=_pct, money=_money)
    env.globals.update(link=link)
    return env


def _number(x: Any) -> float | None:
    """A stored number, or None for anything else (a missing key, null, text): shown as n/a."""
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else None


def _num(x: Any, fmt: str = ",.0f") -> str:
    v = _number(x)
    return "n/a" if v is None else format(int(v) if fmt.endswith("d") else v, fmt)


def _pct(x: Any) -> str:
    v = _number(x)
    return "n/a" if v is None else f"{100 * v:.1f}%"


def _money(x: Any) -> str:
    v = _number(x)
    return "n/a" if v is None else (f"${v:,.2f}" if abs(v) >= 1 else f"${v:.4f}")


class ViewApp:
    """Routes and middleware over one StoreSource; pages are built one at a time on a worker thread,
    so a slow query never stalls the event loop and the store is never read by two threads at once."""

    def __init__(self, source: StoreSource, token: str | None = None) -> None:
        self.source, self.token = source, token
        self.cookie = hashlib.sha256(f"distill-view:{token}".encode()).hexdigest() if token else None
        self.env = _environment()
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="distill-view")
        files = resources.files("view") / "static"
        self.static = {p.name: p.read_bytes() for p in files.iterdir() if p.name.endswith(".css")}

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._guard])
        page = self._page
        store_path = self.source.path
        app.add_routes([
            web.get("/", page("index.html", lambda s, r: pages.index_page(s))),
            web.get("/runs", page("runs.html", lambda s, r: pages.runs_page(s, r.query))),
            web.get("/runs/{run_id}", page("run.html", lambda s, r: pages.run_page(s, r.match_info["run_id"]))),
            web.get("/pools/{pool}", page("pool.html", lambda s, r: prompt_pages.pool_page(
                s, r.match_info["pool"], r.query))),
            web.get("/prompts/{prompt_id}", page("prompt.html", lambda s, r: prompt_pages.prompt_page(
                s, r.match_info["prompt_id"]))),
            web.get("/clusters/{method}/{cluster_id}", page("cluster.html", lambda s, r: curation_pages.cluster_page(
                s, r.match_info["method"], r.match_info["cluster_id"]))),
            web.get("/pairs", page("pairs.html", lambda s, r: curation_pages.pairs_page(s, r.query))),
            web.get("/evals", page("evals.html", lambda s, r: eval_pages.evals_page(s))),
            web.get("/evals/{eval_id}", page("eval.html", lambda s, r: eval_pages.eval_page(
                s, store_path, r.match_info["eval_id"], r.query))),
            web.get("/evals/{eval_id}/plots/{name}", self._plot),
            web.get("/static/{name}", self._static),
        ])
        return app

    # -- middleware -------------------------------------------------------------------------------
    @web.middleware
    async def _guard(self, request: web.Request, handler: Callable) -> web.StreamResponse:
        response = await self._checked(request, handler)
        response.headers.update(HEADERS)
        return response

    async def _checked(self, request: web.Request, handler: Callable) -> web.StreamResponse:
        if request.method not in ("GET", "HEAD"):  # read-only: nothing here takes a body or changes anything
            return self._error(405, "the viewer only answers GET", headers={"Allow": "GET, HEAD"})
        if self.token is None and request.host.rsplit(":", 1)[0] not in LOOPBACK_NAMES:
            return self._error(403, "this viewer answers only requests addressed to 127.0.0.1 or localhost")
        if self.token is not None:
            given = request.query.get("token")
            if given is not None and hmac.compare_digest(given.encode(), self.token.encode()):
                # Once, from the link: a cookie keeps it, and the URL loses it (no token in history).
                target = link(request.path, {k: v for k, v in request.query.items() if k != "token"})
                response = web.Response(status=303, headers={"Location": target})
                response.set_cookie(COOKIE, self.cookie, httponly=True, samesite="Strict", path="/")
                return response
            bearer = request.headers.get("Authorization", "").encode()
            cookie = request.cookies.get(COOKIE, "").encode()
            if not (hmac.compare_digest(cookie, self.cookie.encode())
                    or hmac.compare_digest(bearer, f"Bearer {self.token}".encode())):
                return self._error(401, "this viewer needs its token: open the URL with ?token=<the token> once")
        try:
            return await handler(request)
        except web.HTTPNotFound:
            return self._error(404, "no such page")
        except web.HTTPException as exc:
            return self._error(exc.status, exc.reason)
        except Exception as err:  # a bug: one line on stderr, no traceback to the browser
            print(f"distill view: {request.path}: {type(err).__name__}: {err}", file=sys.stderr, flush=True)
            return self._error(500, "internal error (see the viewer's terminal)")

    def _error(self, status: int, message: str, headers: dict | None = None, retry: bool = False) -> web.Response:
        html = self.env.get_template("error.html").render(status=status, message=message, refresh=retry)
        return web.Response(status=status, text=html, content_type="text/html", headers=headers)

    # -- pages ----------------------------------------------------------------------------------------
    def _page(self, template: str, build: Callable[[Any, web.Request], dict]) -> Callable:
        async def handler(request: web.Request) -> web.StreamResponse:
            def work() -> str:
                with self.source.reading() as store:
                    context = build(store, request)
                return self.env.get_template(template).render(
                    **context, snapshot=self.source.last_was_snapshot, store_name=self.source.path.name,
                    path=request.path)
            try:
                html = await asyncio.get_running_loop().run_in_executor(self.worker, work)
            except PageError as err:
                return self._error(err.status, err.message)
            except DistillError as err:  # the store is unreadable right now (a snapshot mid-write): retry
                return self._error(503, str(err), retry=True)
            return web.Response(text=html, content_type="text/html")
        return handler

    async def _plot(self, request: web.Request) -> web.StreamResponse:
        def work() -> Path:
            with self.source.reading() as store:
                return eval_pages.eval_plot_file(store, self.source.path, request.match_info["eval_id"],
                                                 request.match_info["name"])
        try:
            path = await asyncio.get_running_loop().run_in_executor(self.worker, work)
        except PageError as err:
            return self._error(err.status, err.message)
        return web.Response(body=path.read_bytes(), content_type="image/png")

    async def _static(self, request: web.Request) -> web.StreamResponse:
        body = self.static.get(request.match_info["name"])
        if body is None:
            return self._error(404, "no such file")
        return web.Response(body=body, content_type="text/css")

    def close(self) -> None:
        self.worker.shutdown(wait=True)
        self.source.close()


# -- lifecycle ---------------------------------------------------------------------------------------


class ViewerHandle:
    """A running viewer: `.url`; `.stop()` (or leaving `with`) ends it."""

    def __init__(self, view: ViewApp, runner: web.AppRunner, loop: asyncio.AbstractEventLoop,
                 thread: threading.Thread, host: str, port: int) -> None:
        self._view, self._runner, self._loop, self._thread = view, runner, loop, thread
        self.port = port
        self.url = f"http://{'[' + host + ']' if ':' in host else host}:{port}/"
        self._stopped = False

    def stop(self, timeout: float = 10.0) -> None:
        if self._stopped:
            return
        self._stopped = True
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout)
        self._view.close()

    def __enter__(self) -> ViewerHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_viewer(store_path: str | Path, *, host: str = "127.0.0.1", port: int = 0, token: str | None = None,
                 refresh_s: float = 2.0) -> ViewerHandle:
    """Serve the viewer of `store_path` on host:port (0: a free port) from a background thread."""
    if token is None and not is_loopback(host):
        raise DistillError(f"--host {host} is reachable from other machines: give the viewer a token with "
                           "--token-env NAME (an environment variable holding it), or use --host 127.0.0.1")
    if not 0 <= port <= 65535:
        raise DistillError(f"--port {port}: use 0-65535 (0 picks a free port)")
    view = ViewApp(StoreSource(store_path, refresh_s), token)
    runner = web.AppRunner(view.app(), access_log=None)  # no request lines: no token in a log
    loop = asyncio.new_event_loop()
    started, box = threading.Event(), {}

    def serve() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(runner.setup())
            site = web.TCPSite(runner, host, port)
            loop.run_until_complete(site.start())
            box["port"] = runner.addresses[0][1]
        except BaseException as exc:  # reported to the starting thread, which raises it
            box["error"] = exc
            started.set()
            return
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, name="distill-view", daemon=True)
    thread.start()
    started.wait()
    if "error" in box:
        view.close()
        err = box["error"]
        if isinstance(err, OSError):
            raise DistillError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None
        raise err
    return ViewerHandle(view, runner, loop, thread, host, box["port"])

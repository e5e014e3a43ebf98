"""The operator console's web side: one page, one websocket, no ROS (``clip_vla.ros.console_node`` bridges).

    browser ──GET /──────────────► static/index.html (plain HTML + a little JavaScript, nothing fetched)
            ◄─ws /ws── snapshot, then pushes: image (binary JPEG), suggestions, status, plan, task_status
            ──ws /ws──► {"type": "command", "text": "option 1"} | {"type": "suggest"}
                                   │
    ConsoleApp.on_command / on_suggest (the bridge: publish ``command``, call ``~/suggest``)

Pushes come from other threads (ROS callbacks): ``image``/``event`` hand them to the server's
event loop, which also keeps the latest of each so a page opened later starts complete.

Access: the server binds 127.0.0.1 by default. A non-loopback address is refused unless a
token is set, and with a token every request and the websocket must carry it (``?token=`` or
the ``X-Console-Token`` header); without one the answer is 401.
"""
from __future__ import annotations

import asyncio
import collections
import hmac
import ipaddress
import json
import threading
from pathlib import Path
from typing import Any, Callable, Deque, Dict, Optional, Set

from aiohttp import WSMsgType, web

STATIC = Path(__file__).resolve().parent / "static"
TOKEN_HEADER = "X-Console-Token"
EVENT_KINDS = ("status", "suggestions", "plan", "task_status", "sent", "error")
LATEST_KINDS = ("suggestions", "plan", "task_status")  # a page opened later gets the latest of these
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765


class ConsoleError(ValueError):
    """A console setting that is not allowed (a public bind without a token, a bad port)."""


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine ("localhost", 127.x, ::1)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip()).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def check_bind(host: str, port: int, token: str) -> None:
    """Refuse what would expose the console to the network without a token.

    Raises:
        ConsoleError: a non-loopback ``host`` with an empty ``token``, or a port outside 0-65535.
    """
    if not 0 <= int(port) <= 65535:
        raise ConsoleError(f"port: expected 0-65535 (0: any free port), got {port}")
    if not is_loopback(host) and not token:
        raise ConsoleError(f"host {host!r} is reachable from other machines: set a token (the console can send "
                           "commands to the robot), or bind 127.0.0.1")


class ConsoleApp:
    """The page, the websocket and the latest state; ``on_command``/``on_suggest`` act on the robot."""

    def __init__(self, on_command: Callable[[str], None], on_suggest: Callable[[], None], token: str = "",
                 history: int = 200) -> None:
        self._on_command = on_command
        self._on_suggest = on_suggest
        self._token = token
        self._sockets: Set[web.WebSocketResponse] = set()
        self._lock = threading.Lock()
        self._image: Optional[bytes] = None
        self._latest: Dict[str, Any] = {}
        self._history: Deque[Dict[str, Any]] = collections.deque(maxlen=history)
        self._loop: Optional[asyncio.AbstractEventLoop] = None

    # ---- the aiohttp application
    def web_app(self) -> web.Application:
        app = web.Application(middlewares=[self._require_token])
        app.router.add_get("/", self._index)
        app.router.add_get("/ws", self._websocket)
        app.router.add_get("/state", self._state)
        app.on_startup.append(self._started)
        app.on_shutdown.append(self._closing)
        return app

    @web.middleware
    async def _require_token(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if self._token:
            given = request.query.get("token") or request.headers.get(TOKEN_HEADER) or ""
            if not hmac.compare_digest(given.encode(), self._token.encode()):
                raise web.HTTPUnauthorized(text="this console needs its token (?token=... or X-Console-Token)")
        return await handler(request)

    async def _started(self, app: web.Application) -> None:
        self._loop = asyncio.get_running_loop()

    async def _closing(self, app: web.Application) -> None:
        for ws in list(self._sockets):
            await ws.close()

    async def _index(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    async def _state(self, request: web.Request) -> web.Response:
        return web.json_response(self.snapshot())

    async def _websocket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=20.0)
        await ws.prepare(request)
        self._sockets.add(ws)
        try:
            await ws.send_str(json.dumps({"type": "snapshot", "data": self.snapshot()}))
            with self._lock:
                image = self._image
            if image is not None:
                await ws.send_bytes(image)
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    await self._received(ws, msg.data)
        finally:
            self._sockets.discard(ws)
        return ws

    async def _received(self, ws: web.WebSocketResponse, text: str) -> None:
        """A page's request: a command to send, or a suggestion round to ask for."""
        try:
            message = json.loads(text)
            kind = message.get("type")
            if kind == "command" and str(message.get("text", "")).strip():
                command = str(message["text"]).strip()
                await asyncio.get_running_loop().run_in_executor(None, self._on_command, command)
                self.event("sent", {"command": command})
            elif kind == "suggest":
                await asyncio.get_running_loop().run_in_executor(None, self._on_suggest)
            else:
                raise ValueError(f"unknown request {message!r}")
        except Exception as exc:  # noqa: BLE001 - a bad request is answered, never fatal
            await ws.send_str(json.dumps({"type": "error", "data": {"message": f"{type(exc).__name__}: {exc}"}}))

    # ---- what the bridge pushes (any thread)
    def snapshot(self) -> Dict[str, Any]:
        with self._lock:
            return {**self._latest, "history": list(self._history)}

    def image(self, jpeg: bytes) -> None:
        """A new debug image (JPEG bytes) for every page."""
        with self._lock:
            self._image = jpeg
        self._push(lambda ws: ws.send_bytes(jpeg))

    def event(self, kind: str, data: Any) -> None:
        """A JSON update for every page: ``kind`` is one of EVENT_KINDS.

        Raises:
            ValueError: an unknown ``kind``.
        """
        if kind not in EVENT_KINDS:
            raise ValueError(f"unknown console event {kind!r} (known: {', '.join(EVENT_KINDS)})")
        with self._lock:
            if kind in LATEST_KINDS:
                self._latest[kind] = data
            elif kind in ("status", "sent"):
                self._history.append({"type": kind, "data": data})
        text = json.dumps({"type": kind, "data": data})
        self._push(lambda ws: ws.send_str(text))

    def _push(self, send: Callable[[web.WebSocketResponse], Any]) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return

        def schedule() -> None:
            for ws in list(self._sockets):
                if not ws.closed:
                    loop.create_task(send(ws))

        loop.call_soon_threadsafe(schedule)


class ConsoleServer:
    """Serves a ``ConsoleApp`` from a background thread (its own event loop) until ``stop``."""

    def __init__(self, app: ConsoleApp, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, token: str = "") -> None:
        """Raises ConsoleError: see ``check_bind``."""
        check_bind(host, port, token)
        self.app = app
        self.host = host
        self.port = int(port)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="clip_vla_console", daemon=True)
        self._runner: Optional[web.AppRunner] = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def start(self, timeout: float = 10.0) -> str:
        """Start serving; returns the page's URL (the real port when ``port`` was 0).

        Raises:
            OSError: the address is in use or cannot be bound.
        """
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._serve(), self._loop).result(timeout)
        return self.url

    async def _serve(self) -> None:
        self._runner = web.AppRunner(self.app.web_app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        if self._runner.addresses:  # the real port when 0 was asked for
            self.port = int(self._runner.addresses[0][1])

    def stop(self, timeout: float = 5.0) -> None:
        """Close every page's socket, stop serving and end the thread."""
        if not self._thread.is_alive():
            return
        if self._runner is not None:
            try:
                asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout)
            except Exception:  # noqa: BLE001 - stopping must finish whatever the server was doing
                pass
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout)

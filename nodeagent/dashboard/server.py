"""The dashboard's HTTP server: the standard library's threaded server, GET only.

Why these guards: the dashboard reads the fleet with the admin's own certificate, so
whoever reaches its port reads what the admin may read. It binds to loopback unless told
otherwise (`loopback_problem`), refuses a Host header that is not its own (a web page the
admin visits could otherwise reach it through DNS rebinding), and sends a
Content-Security-Policy that allows only its own script and styles: node-controlled text
is escaped on the server, and the policy would stop an injected script even if it were not.
"""

from __future__ import annotations

import ipaddress
import json
import queue
import socket
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from nodeagent.dashboard import fabric_svg, pages
from nodeagent.dashboard.source import InventoryError, Source

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
STATIC = {
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
KEEPALIVE_SECONDS = 15.0


def split_listen(listen: str) -> tuple[str, int]:
    """HOST:PORT (IPv6 in brackets) into its parts; ValueError with the reason."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"--listen {listen!r}: give HOST:PORT, e.g. 127.0.0.1:8080")
    host = host.strip("[]")
    if not host:
        raise ValueError(f"--listen {listen!r}: give a host, e.g. 127.0.0.1:{port}")
    return host, int(port)


def loopback_problem(host: str) -> str:
    """Why `host` is not loopback-only, or "" when every address it names is loopback."""
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError as exc:
        return f"{host!r} does not resolve ({exc})"
    addresses = {str(info[4][0]) for info in infos}
    others = sorted(a for a in addresses if not ipaddress.ip_address(a.split("%")[0]).is_loopback)
    if others:
        return f"{host!r} is not a loopback address ({', '.join(others)})"
    return ""


def _static(name: str) -> bytes:
    return resources.files("nodeagent.dashboard").joinpath("static", name).read_bytes()


class DashboardServer(ThreadingHTTPServer):
    daemon_threads = True
    # the threaded server binds with SO_REUSEADDR, which on Linux would let it share a port
    allow_reuse_address = False

    def __init__(self, host: str, port: int, source: Source, *, check_host: bool) -> None:
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        super().__init__((host, port), Handler)
        self.source = source
        self.check_host = check_host
        self.closing = threading.Event()
        bound = self.server_address[1]
        self.allowed_hosts = {
            f"{name}:{bound}" for name in ("127.0.0.1", "localhost", "[::1]", host, f"[{host}]")
        }

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def shutdown(self) -> None:
        self.closing.set()
        super().shutdown()


class Handler(BaseHTTPRequestHandler):
    server: DashboardServer
    protocol_version = "HTTP/1.1"
    server_version = "nodeagent-dashboard"
    sys_version = ""

    def log_message(self, *args: Any) -> None:
        """Quiet: a dashboard left open logs nothing per request."""

    # --- plumbing ------------------------------------------------------------------------
    def _send(self, status: int, body: bytes, ctype: str, *, cache: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Cache-Control", "max-age=300" if cache else "no-store")
        self.send_header("Vary", "X-Fragment")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _html(self, title: str, page: str, live: str, status: int = 200) -> None:
        fragment = self.headers.get("X-Fragment") == "1"
        text = live if fragment else pages.layout(title, page, live)
        self._send(status, text.encode(), "text/html; charset=utf-8")

    def _refuse(self, status: HTTPStatus, why: str) -> None:
        self._send(status, (why + "\n").encode(), "text/plain; charset=utf-8")

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_POST(self) -> None:
        self._refuse(HTTPStatus.METHOD_NOT_ALLOWED, "the dashboard is read-only")

    do_PUT = do_DELETE = do_PATCH = do_POST

    def do_GET(self) -> None:
        if self.server.check_host and self.headers.get("Host", "") not in self.server.allowed_hosts:
            self._refuse(HTTPStatus.MISDIRECTED_REQUEST, "unexpected Host header")
            return
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        path = url.path
        try:
            if path == "/":
                self._fleet(query)
            elif path.startswith("/nodes/"):
                self._node(unquote(path.removeprefix("/nodes/")))
            elif path == "/fabric":
                self._fabric(query.get("group", ""))
            elif path == "/fabric.svg":
                svg, _ = self._svg(query.get("group", ""))
                self._send(200, svg.encode(), "image/svg+xml; charset=utf-8")
            elif path == "/jobs":
                self._jobs()
            elif path.startswith("/jobs/"):
                self._job(unquote(path.removeprefix("/jobs/")))
            elif path == "/events":
                self._events()
            elif path == "/status.json":
                body = json.dumps(self.server.source.status().as_dict()).encode()
                self._send(200, body, "application/json")
            elif path == "/favicon.ico":
                self._send(200, _static("favicon.svg"), STATIC["favicon.svg"], cache=True)
            elif path.startswith("/static/") and path.removeprefix("/static/") in STATIC:
                name = path.removeprefix("/static/")
                self._send(200, _static(name), STATIC[name], cache=True)
            else:
                status = self.server.source.status()
                self._html("not found", "", pages.error_page("Not found", path, status), 404)
        except (BrokenPipeError, ConnectionResetError):
            pass

    # --- pages ---------------------------------------------------------------------------
    def _fleet(self, query: dict[str, str]) -> None:
        page = query.get("page", "1")
        q = pages.Query(
            text=query.get("q", "")[:200],
            state=query.get("state", ""),
            pool=query.get("pool", ""),
            cluster=query.get("cluster", ""),
            profile=query.get("profile", ""),
            sort=query.get("sort", ""),
            desc=query.get("dir") == "desc",
            page=int(page) if page.isdigit() else 1,
        )
        source = self.server.source
        self._html("Fleet", "fleet", pages.fleet(source.rows(), q, source.status()))

    def _node(self, node_id: str) -> None:
        source = self.server.source
        try:
            node = source.node(node_id)
        except InventoryError as exc:
            status = source.status()
            code = 404 if "NOT_FOUND" in str(exc) else 502
            self._html("node", "node", pages.error_page("Node", str(exc), status), code)
            return
        try:
            labels: dict[str, str] | None = source.labels(node.id)
        except InventoryError:
            labels = None
        topology = source.topology()
        tiers = topology.nodes.get(node.hostname) if topology is not None else None
        live = pages.node_page(node, labels, tiers, source.status())
        self._html(node.hostname or node.id, "node", live)

    def _svg(self, focus: str) -> tuple[str, int]:
        source = self.server.source
        nodes = {r.hostname: (r.id, r.state) for r in source.rows()}
        return fabric_svg.render(source.topology(), nodes, focus=focus)

    def _fabric(self, focus: str) -> None:
        source = self.server.source
        svg, boxes = self._svg(focus)
        loaded = source.topology() is not None
        self._html("Fabric", "fabric", pages.fabric(svg, boxes, focus, source.status(), loaded))

    def _jobs(self) -> None:
        source = self.server.source
        try:
            items, error = source.jobs(), ""
        except InventoryError as exc:
            items, error = None, str(exc)
        self._html("Jobs", "jobs", pages.jobs(items, error, source.status()))

    def _job(self, job_id: str) -> None:
        source = self.server.source
        try:
            job, events = source.job(job_id)
        except InventoryError as exc:
            code = 404 if "NOT_FOUND" in str(exc) else 502
            self._html("job", "jobs", pages.error_page("Job", str(exc), source.status()), code)
            return
        self._html(f"job {job.id}", "jobs", pages.job_page(job, events, source.status()))

    def _events(self) -> None:
        """Server-sent events: one line per change; the page fetches what it shows again."""
        source = self.server.source
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        q = source.subscribe()
        try:
            self.wfile.write(b"retry: 1000\nevent: hello\ndata: {}\n\n")
            self.wfile.flush()
            while not self.server.closing.is_set():
                try:
                    kind, data = q.get(timeout=KEEPALIVE_SECONDS)
                except queue.Empty:  # a comment keeps proxies and the socket alive
                    self.wfile.write(b": keepalive\n\n")
                    self.wfile.flush()
                    continue
                if kind == "close":
                    break
                payload = json.dumps({"id": data} if kind == "node" else {})
                self.wfile.write(f"event: {kind}\ndata: {payload}\n\n".encode())
                self.wfile.flush()
        finally:
            source.unsubscribe(q)
            self.close_connection = True


def serve(
    source: Source,
    host: str,
    port: int,
    *,
    check_host: bool = True,
    ready: Any = None,
) -> None:
    """Serve until interrupted (SIGINT or SIGTERM end it cleanly); `ready(url)` is called
    once the port is bound, before the first request."""
    import signal

    server = DashboardServer(host, port, source, check_host=check_host)
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{server.port}/"

    def stop(*_: Any) -> None:  # a signal handler: (signum, frame)
        threading.Thread(target=server.shutdown, daemon=True).start()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    source.start()
    try:
        if ready is not None:
            ready(url)
        server.serve_forever(poll_interval=0.2)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        source.stop()
        server.server_close()

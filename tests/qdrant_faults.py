"""Real failures of qdrant-client, made over real loopback sockets: no Qdrant server installs here,
so these servers answer Qdrant's REST and gRPC endpoints with the faults a real server or the
network gives (an HTTP status, a gRPC status, a stall, a closed or reset connection), and a
closed port refuses the connection. qdrant-client then raises exactly what it raises against a
real server in that state, and the tests hand those exception objects to the retry decision and
to a store that raises them.

    with RestFaults() as rest:
        rest.mode = ("status", 503, {})
        exc = rest_error(rest.url)          # qdrant_client's UnexpectedResponse(503)

`FlakyStore` wraps a real store and raises such exceptions on the writes a test scripts.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
from qdrant_client import QdrantClient, models

POINT = models.PointStruct(id=1, vector=[0.1, 0.2], payload={})


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class _RestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def do_PUT(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        mode = self.server.mode
        kind = mode[0]
        if kind == "status":  # ("status", code, headers)
            body = b'{"status": {"error": "scripted fault"}, "time": 0.0}'
            self.send_response(mode[1])
            for k, v in mode[2].items():
                self.send_header(k, v)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif kind == "stall":  # ("stall", seconds): longer than the client's timeout
            time.sleep(mode[1])
            self.close_connection = True
        elif kind == "close":  # closed before any answer
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
        elif kind == "reset":  # RST instead of an answer
            self.close_connection = True
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
        elif kind == "garbage":  # 200 with a body that is not the protocol
            body = b'{"result": {"not": "an update result"}, "status": "ok", "time": 0.0}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    do_POST = do_PUT


class RestFaults:
    """An HTTP server on 127.0.0.1 answering every PUT/POST (Qdrant's writes) with `mode`."""

    def __init__(self):
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _RestHandler)
        self.server.daemon_threads = True
        self.server.mode = ("status", 503, {})
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    @property
    def mode(self):
        return self.server.mode

    @mode.setter
    def mode(self, value) -> None:
        self.server.mode = value

    def __enter__(self) -> RestFaults:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


class _GrpcAbort(grpc.GenericRpcHandler):
    def __init__(self, owner: GrpcFaults):
        self.owner = owner

    def service(self, details):
        def answer(request, context):
            code, metadata, sleep = self.owner.mode
            if sleep:
                time.sleep(sleep)
            if metadata:
                context.set_trailing_metadata(metadata)
            context.abort(code, "scripted fault")

        return grpc.unary_unary_rpc_method_handler(answer)


class GrpcFaults:
    """A gRPC server on 127.0.0.1 ending every call (Qdrant's /qdrant.Points/Upsert ...) with
    `mode` = (status code, trailing metadata, seconds to wait first)."""

    def __init__(self):
        self.mode = (grpc.StatusCode.UNAVAILABLE, (), 0.0)
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        self.server.add_generic_rpc_handlers([_GrpcAbort(self)])
        self.port = self.server.add_insecure_port("127.0.0.1:0")

    def __enter__(self) -> GrpcFaults:
        self.server.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.stop(0)


def _upsert(client: QdrantClient) -> BaseException:
    try:
        client.upsert("docs", [POINT], wait=True)
    except Exception as e:  # what the store's write would raise
        return e
    finally:
        client.close()
    raise AssertionError("the upsert did not fail")


def rest_error(url: str, timeout: int = 1) -> BaseException:
    """What qdrant-client's REST client raises for an upsert to `url`."""
    return _upsert(QdrantClient(url=url, timeout=timeout, check_compatibility=False))


def grpc_error(port: int, timeout: int = 1) -> BaseException:
    """What qdrant-client's gRPC client raises for an upsert to 127.0.0.1:`port`."""
    return _upsert(QdrantClient(host="127.0.0.1", port=closed_port(), grpc_port=port, prefer_grpc=True,
                                timeout=timeout, check_compatibility=False))


def real_errors() -> dict[str, BaseException]:
    """Real errors of qdrant-client, one of each kind the tests raise from a FlakyStore: transient
    ones (refused over REST, UNAVAILABLE over gRPC, 503, a read timeout, 429 with Retry-After 5)
    and a 400."""
    from connectors.qdrant.retry import transient_cause

    port = closed_port()
    with RestFaults() as server:
        def with_mode(mode):
            server.mode = mode
            return rest_error(server.url)

        out = {"refused": rest_error(f"http://127.0.0.1:{port}"), "unavailable": grpc_error(port),
               "503": with_mode(("status", 503, {})), "timeout": with_mode(("stall", 2.5)),
               "429": with_mode(("status", 429, {"Retry-After": "5"})), "400": with_mode(("status", 400, {}))}
    assert all(transient_cause(e) for k, e in out.items() if k != "400")
    return out


class FlakyStore:
    """A real store whose writes raise the scripted exceptions before doing the write (or, with
    `applied`, after it: a timeout that came after the server had written). A rule is
    (method, source or None for any, times or None for always, exception, applied)."""

    WRITES = ("upsert", "delete_other_versions", "delete_version", "delete_source")

    def __init__(self, store, rules):
        self._store = store
        self.rules = [list(r) for r in rules]
        self.calls: list[tuple[str, tuple[str, ...], bool]] = []  # (method, sources, failed)

    def __getattr__(self, name):
        target = getattr(self._store, name)
        if name not in self.WRITES:
            return target

        def write(*args):
            sources = (tuple(dict.fromkeys(c.source for c in args[0])) if name == "upsert" else (args[0],))
            for rule in self.rules:
                method, source, times, exc, applied = rule
                if method == name and (source is None or source in sources) and (times is None or times > 0):
                    if times is not None:
                        rule[2] -= 1
                    self.calls.append((name, sources, True))
                    if applied:
                        target(*args)
                    raise exc
            self.calls.append((name, sources, False))
            return target(*args)

        return write

    def attempts(self, method: str, source: str) -> int:
        return sum(1 for m, s, _ in self.calls if m == method and source in s)

"""A TCP proxy on 127.0.0.1 in front of a real server, that stops at the HTTP request a test names.

    with TcpProxy(platform.mlflow_url) as proxy:
        proxy.stop_before("POST", "/registered-models/alias")   # the server is gone from that request on
        client = MlflowClient(proxy.url)
        ...
        proxy.restore()                                          # and back, on the same port

`stop_before`: the matching request is not forwarded; every connection closes and the port refuses
connections (a server that stopped). `stop_after`: the request is forwarded and carried out, then
the proxy stops before its answer reaches the client (a server that stopped while answering; the
client cannot tell whether the write happened). Requests are recognised by their request line
(method, and a path containing the given text); the proxy keeps every request line it saw, in order.
"""

from __future__ import annotations

import re
import socket
import threading
from urllib.parse import urlsplit

REQUEST_LINE = re.compile(rb"(GET|HEAD|POST|PUT|PATCH|DELETE) (\S+) HTTP/1\.[01]\r\n")


class TcpProxy:
    def __init__(self, target_url: str):
        target = urlsplit(target_url)
        self.target = (target.hostname, target.port)
        self.requests: list[tuple[str, str]] = []
        self._rule: tuple[str, str, str] | None = None  # (when, method, path text)
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self.port = 0
        self.restore()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def stopped(self) -> bool:
        return self._listener is None

    def stop_before(self, method: str, path_contains: str) -> None:
        self._rule = ("before", method, path_contains)

    def stop_after(self, method: str, path_contains: str) -> None:
        self._rule = ("after", method, path_contains)

    def stop(self) -> None:
        """Close the port and every connection now."""
        with self._lock:
            listener, self._listener = self._listener, None
            sockets, self._sockets = self._sockets, set()
        for s in ([listener] if listener else []) + list(sockets):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def restore(self) -> None:
        """Listen again (on the same port once it had one); no rule until a new one is set."""
        self._rule = None
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- the pumps -------------------------------------------------------------------------------
    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # stopped
            try:
                upstream = socket.create_connection(self.target, timeout=10)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not listener:
                    client.close()
                    upstream.close()
                    return
                self._sockets |= {client, upstream}
            answer_then_stop = threading.Event()
            threading.Thread(target=self._requests, args=(client, upstream, answer_then_stop), daemon=True).start()
            threading.Thread(target=self._answers, args=(upstream, client, answer_then_stop), daemon=True).start()

    def _requests(self, client: socket.socket, upstream: socket.socket, answer_then_stop: threading.Event) -> None:
        while data := _recv(client):
            for match in REQUEST_LINE.finditer(data):
                method, path = match[1].decode(), match[2].decode()
                self.requests.append((method, path))
                rule = self._rule
                if rule and rule[1] == method and rule[2] in path:
                    if rule[0] == "before":
                        self.stop()
                        return
                    answer_then_stop.set()
            if not _send(upstream, data):
                break
        _close(upstream)

    def _answers(self, upstream: socket.socket, client: socket.socket, answer_then_stop: threading.Event) -> None:
        while data := _recv(upstream):
            if answer_then_stop.is_set():  # the server carried the request out; its answer is lost
                self.stop()
                return
            if not _send(client, data):
                break
        _close(client)


def _recv(s: socket.socket) -> bytes:
    try:
        return s.recv(65536)
    except OSError:
        return b""


def _send(s: socket.socket, data: bytes) -> bool:
    try:
        s.sendall(data)
        return True
    except OSError:
        return False


def _close(s: socket.socket) -> None:
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass

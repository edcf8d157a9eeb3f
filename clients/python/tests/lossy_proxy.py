"""A TCP proxy between a publisher and Redis that, when armed, loses the answer to the
next call of the publish script: the call reaches Redis and runs, its reply is dropped
and the publisher's connection is closed, so the publisher cannot know whether it was
done (as when a connection breaks at the wrong moment). Everything else is forwarded as
it comes. Threads, so that a synchronous and an asyncio publisher can both use it."""

from __future__ import annotations

import collections
import contextlib
import hashlib
import re
import socket
import threading
from types import TracebackType

#: A value of RESP2/RESP3 as far as the proxy needs it: a string's bytes, an aggregate's
#: elements, or None (a null).
Value = bytes | list["Value"] | None

#: What `publish.lua` answers: the event id, or an array whose first element is one.
EVENT_ID = re.compile(rb"[A-Za-z0-9]+:[0-9]+")


def parse(buf: bytes, at: int) -> tuple[Value, bool, int] | None:
    """The RESP value at `at` of `buf`, whether it is an out-of-band push, and where it
    ends; None while it is incomplete."""
    end = buf.find(b"\r\n", at)
    if end < 0:
        return None
    kind, line, after = buf[at : at + 1], buf[at + 1 : end], end + 2
    if kind in (b"+", b"-", b":", b"_", b",", b"#", b"("):
        return line, False, after
    if kind in (b"$", b"!", b"="):
        size = int(line)
        if size < 0:
            return None, False, after
        if len(buf) < after + size + 2:
            return None
        return buf[after : after + size], False, after + size + 2
    if kind in (b"*", b"~", b">", b"%", b"|"):
        count = int(line)
        if count < 0:
            return None, False, after
        if kind in (b"%", b"|"):
            count *= 2
        items: list[Value] = []
        for _ in range(count):
            item = parse(buf, after)
            if item is None:
                return None
            items.append(item[0])
            after = item[2]
        if kind == b"|":  # attributes: the reply they describe follows
            reply = parse(buf, after)
            return reply if reply is None else (reply[0], reply[1], reply[2])
        return items, kind == b">", after
    raise ValueError(f"not RESP: {buf[at : at + 20]!r}")


def is_event_id(reply: Value) -> bool:
    """Whether `reply` is one of `publish.lua`'s answers."""
    if isinstance(reply, list):
        return bool(reply) and is_event_id(reply[0])
    return isinstance(reply, bytes) and EVENT_ID.fullmatch(reply) is not None


class LossyProxy:
    """Listens on a free loopback port (`url`) and forwards to Redis on `port`."""

    def __init__(self, port: int, script: str) -> None:
        self.upstream = ("127.0.0.1", port)
        self.sha = hashlib.sha1(script.encode()).hexdigest().encode()
        self.script = script.encode()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self._lock = threading.Lock()
        self._armed = False
        self._sockets: list[socket.socket] = []
        #: The answers lost (each a reply the script gave in Redis).
        self.lost: list[Value] = []
        #: Connections accepted so far.
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def arm(self) -> None:
        """Loses the answer to the next publish script call, and its connection."""
        with self._lock:
            self._armed = True

    def __enter__(self) -> LossyProxy:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        err: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in (self.listener, *sockets):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _is_publish(self, command: Value) -> bool:
        if not isinstance(command, list) or len(command) < 2:
            return False
        name, first = command[0], command[1]
        if not isinstance(name, bytes) or not isinstance(first, bytes):
            return False
        name = name.upper()
        return (name == b"EVALSHA" and first.lower() == self.sha) or (
            name == b"EVAL" and first == self.script
        )

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            try:
                server = socket.create_connection(self.upstream)
            except OSError:
                client.close()
                continue
            with self._lock:
                self.connections += 1
                self._sockets += [client, server]
            # Per connection, the calls sent and not answered yet, oldest first (Redis
            # answers in order): whether each is a publish script call.
            calls: collections.deque[bool] = collections.deque()
            for pump, args in (
                (self._requests, (client, server, calls)),
                (self._replies, (server, client, calls)),
            ):
                threading.Thread(target=pump, args=args, daemon=True).start()

    def _requests(
        self, client: socket.socket, server: socket.socket, calls: collections.deque[bool]
    ) -> None:
        buf, at = b"", 0
        try:
            while chunk := client.recv(65536):
                buf += chunk
                # Each call is noted before its last bytes go on, so before its answer.
                while (command := parse(buf, at)) is not None:
                    calls.append(self._is_publish(command[0]))
                    at = command[2]
                buf, at = buf[at:], 0
                server.sendall(chunk)
        except OSError:
            pass
        finally:
            _close(client, server)

    def _replies(
        self, server: socket.socket, client: socket.socket, calls: collections.deque[bool]
    ) -> None:
        buf = b""
        try:
            while chunk := server.recv(65536):
                buf += chunk
                at, out = 0, b""
                while (reply := parse(buf, at)) is not None:
                    value, push, end = reply
                    if not push and calls.popleft() and self._disarm():
                        self.lost.append(value)
                        client.sendall(out)  # what came before it, and nothing after
                        return
                    out += buf[at:end]
                    at = end
                buf = buf[at:]
                client.sendall(out)
        except OSError:
            pass
        finally:
            _close(client, server)

    def _disarm(self) -> bool:
        with self._lock:
            armed, self._armed = self._armed, False
            return armed


def _close(*sockets: socket.socket) -> None:
    for sock in sockets:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()

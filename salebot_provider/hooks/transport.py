"""The hook's HTTP transport: no redirects, and a timeout that bounds the whole reply, not each read."""

from __future__ import annotations

import contextlib
import heapq
import itertools
import os
import socket
import threading
import time
from typing import TYPE_CHECKING, Any

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from salebot_provider.exceptions import SalebotValidationError

if TYPE_CHECKING:
    from collections.abc import Callable

#: Bytes read from the socket at a time while a reply's body comes in.
READ_SIZE = 65536
#: Keep-alive connections kept per host: as many as an operator's ``max_workers`` may use at once.
POOL_SIZE = 16


class _Watchdog:
    """
    One daemon thread that runs actions at their deadlines, shared by every connection.

    Arming costs a heap push under a lock, not a thread per request as ``threading.Timer`` would;
    a disarmed deadline is dropped when it reaches the top of the heap.
    """

    def __init__(self) -> None:
        self._start()
        # A forked child (a Celery or local-executor worker) has no copy of the thread: start afresh.
        os.register_at_fork(after_in_child=self._start)

    def _start(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int]] = []
        self._armed: dict[int, Callable[[], None]] = {}
        self._ids = itertools.count()
        self._thread: threading.Thread | None = None

    def arm(self, delay: float, action: Callable[[], None]) -> int:
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="salebot-deadlines", daemon=True)
                self._thread.start()
            token, when = next(self._ids), time.monotonic() + delay
            # Wake the thread only for a new earliest deadline: one wake-up per request would cost
            # a switch of threads on every call.
            if not self._heap or when < self._heap[0][0]:
                self._cond.notify()
            heapq.heappush(self._heap, (when, token))
            self._armed[token] = action
            return token

    def disarm(self, token: int) -> bool:
        """Cancel an action; False when it already ran."""
        with self._cond:
            return self._armed.pop(token, None) is not None

    def _run(self) -> None:
        with self._cond:
            while True:
                while self._heap and self._heap[0][1] not in self._armed:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._cond.wait()
                    continue
                when, token = self._heap[0]
                left = when - time.monotonic()
                if left > 0:
                    self._cond.wait(left)
                    continue
                heapq.heappop(self._heap)
                self._armed.pop(token)()


_WATCHDOG = _Watchdog()


class _HeadersInTime:
    """
    Bound the wait for the status line and headers as a whole.

    urllib3 gives each socket read the read timeout, so a server that sends a header byte every
    few seconds would never time out. Here the socket is shut down when the read timeout has
    passed since the request went out, and the wait ends as a read timeout.
    """

    sock: socket.socket | None
    timeout: Any

    def getresponse(self) -> Any:
        limit = self.timeout if isinstance(self.timeout, int | float) else None
        sock = self.sock
        if limit is None or sock is None:
            return super().getresponse()  # type: ignore[misc]

        def cut() -> None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

        token = _WATCHDOG.arm(limit, cut)
        try:
            response = super().getresponse()  # type: ignore[misc]
        except Exception:
            if not _WATCHDOG.disarm(token):
                raise TimeoutError("the reply's headers did not arrive in time") from None
            raise
        if not _WATCHDOG.disarm(token):
            raise TimeoutError("the reply's headers did not arrive in time")
        return response


class _Connection(_HeadersInTime, HTTPConnection):
    pass


class _TLSConnection(_HeadersInTime, HTTPSConnection):
    pass


class _Pool(HTTPConnectionPool):
    ConnectionCls = _Connection


class _TLSPool(HTTPSConnectionPool):
    ConnectionCls = _TLSConnection


_POOLS = {"http": _Pool, "https": _TLSPool}


class _Adapter(HTTPAdapter):
    """Pools of connections whose headers come in time, direct and through an HTTP(S) proxy."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _POOLS

    def proxy_manager_for(self, proxy: str, **kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **kwargs)
        # A SOCKS manager has pools of its own kind: leave those alone.
        if manager.pool_classes_by_scheme is urllib3.poolmanager.pool_classes_by_scheme:
            manager.pool_classes_by_scheme = _POOLS
        return manager


class Session(requests.Session):
    """
    The hook's session: no redirects, and the wait for a reply's headers bounded as a whole.

    A redirect is never followed, nor is its body read to prepare one.
    """

    def __init__(self) -> None:
        super().__init__()
        self.mount("https://", _Adapter(pool_maxsize=POOL_SIZE))
        self.mount("http://", _Adapter(pool_maxsize=POOL_SIZE))

    def get_redirect_target(self, resp: requests.Response) -> None:
        """Say there is nowhere to go: a 3xx is then judged as a failure like any other reply."""
        return None


def check_proxy(scheme: str, proxy: str) -> None:
    """
    Refuse a proxy URL requests could not use, as a configuration error rather than a retried failure.

    :param scheme: the scheme the proxy is for.
    :param proxy: the proxy URL from the environment.
    :raises SalebotValidationError: naming the setting, never the proxy's credentials.
    """
    try:
        parsed = urllib3.util.parse_url(proxy if "://" in proxy else f"http://{proxy}")
        ok = bool(parsed.host) and parsed.scheme in (
            "http",
            "https",
            "socks4",
            "socks4a",
            "socks5",
            "socks5h",
        )
    except (ValueError, urllib3.exceptions.LocationParseError):
        ok = False
    if not ok:
        shown = repr(proxy.split("@")[-1][:60])  # a proxy URL may carry a password: show what follows it
        raise SalebotValidationError(
            f"Salebot: the proxy setting for {scheme} (HTTPS_PROXY, HTTP_PROXY or ALL_PROXY) is malformed: "
            f"{shown}; give a URL such as http://proxy.example.com:3128"
        )


def read_whole(response: requests.Response, deadline: float) -> bytes:
    """
    Read a streamed reply's body to the end by ``deadline``, however slowly it trickles in.

    Each socket read waits at most the time left, so the deadline bounds the whole body, not each
    read. The connection goes back to the pool only when the body was read whole.

    :param response: a response opened with ``stream=True``.
    :param deadline: a ``time.monotonic()`` moment.
    :raises requests.exceptions.ReadTimeout: when the deadline passes first.
    :raises requests.exceptions.ChunkedEncodingError: when the reply breaks off.
    :raises requests.exceptions.ContentDecodingError: when its Content-Encoding cannot be decoded.
    """
    raw = response.raw
    body = bytearray()
    # A body of known length, not encoded, ends when that many bytes came: no last empty read.
    plain = response.headers.get("Content-Encoding", "identity").strip().lower() == "identity"
    try:
        while not (plain and body and raw.length_remaining == 0):
            left = deadline - time.monotonic()
            if left <= 0:
                raise requests.exceptions.ReadTimeout("the whole reply did not arrive in time")
            connection = raw.connection
            if connection is not None and connection.sock is not None:
                connection.sock.settimeout(left)
            chunk = raw.read1(READ_SIZE, decode_content=True)
            if not chunk:
                break
            body += chunk
    except urllib3.exceptions.ReadTimeoutError as exc:
        raw.close()
        raise requests.exceptions.ReadTimeout(str(exc)) from None
    except urllib3.exceptions.DecodeError as exc:
        raw.close()
        raise requests.exceptions.ContentDecodingError(str(exc)) from None
    except (urllib3.exceptions.ProtocolError, OSError) as exc:
        raw.close()
        raise requests.exceptions.ChunkedEncodingError(str(exc)) from None
    except BaseException:
        raw.close()
        raise
    raw.release_conn()
    return bytes(body)

"""The emulator's outgoing webhook: each message it delivers or a client writes, POSTed as Salebot does."""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from salebot_provider.testing.state import Client

log = logging.getLogger(__name__)

#: Seconds one POST may take; Salebot does not wait long either.
TIMEOUT = 5.0


def webhook_payload(
    client: Client,
    project_id: int,
    message_id: int,
    text: str | None,
    *,
    is_input: bool,
    block_id: int | None = None,
    attachments: list[Any] | None = None,
) -> dict[str, Any]:
    """One message as Salebot's webhook posts it (the vendor's fields, ``recepient`` spelt as theirs)."""
    return {
        "id": message_id,
        "client": {
            "id": client.id,
            "recepient": client.platform_id,
            "client_type": client.client_type,
            "name": client.name,
            "avatar": None,
            "created_at": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(client.created_at)),
            "tag": client.tag,
            "group": client.group,
            "variables": dict(client.variables),
        },
        "message": text,
        "attachments": list(attachments or []),
        "message_id": block_id,
        "project_id": project_id,
        "is_input": 1 if is_input else 0,
        "delivered": 1,
        "error_message": "",
    }


@dataclass(frozen=True)
class Delivery:
    """
    One POST the emulator made to a webhook URL.

    :param message: the message's id.
    :param url: where it went.
    :param status: the HTTP status answered, or 0 when there was no answer.
    :param error: why there was no answer (refused, timed out ...), else None.
    """

    message: int
    url: str
    status: int
    error: str | None = None


class WebhookPoster:
    """
    Posts payloads in order from one thread: one attempt each, never again (as Salebot does).

    With several URLs, the messages go to each in turn, as a load balancer in front of several
    receivers would spread them.
    """

    def __init__(self) -> None:
        self.urls: list[str] = []
        self.deliveries: list[Delivery] = []
        self._turn = 0
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._idle = threading.Condition()
        self._busy = 0
        self._thread: threading.Thread | None = None

    def post(self, payload: dict[str, Any]) -> None:
        """Queue one payload (called under the emulator's lock: it never waits)."""
        if not self.urls:
            return
        url = self.urls[self._turn % len(self.urls)]
        self._turn += 1
        with self._idle:
            self._busy += 1
        self._queue.put({"url": url, "payload": payload})
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="salebot-emulator-webhook", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            try:
                self.deliveries.append(self._send(item["url"], item["payload"]))
            finally:
                with self._idle:
                    self._busy -= 1
                    self._idle.notify_all()

    @staticmethod
    def _send(url: str, payload: dict[str, Any]) -> Delivery:
        body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        request = urllib.request.Request(url, body, {"Content-Type": "application/json"}, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT) as reply:
                reply.read()
                return Delivery(payload["id"], url, reply.status)
        except urllib.error.HTTPError as exc:
            return Delivery(payload["id"], url, exc.code)
        except (OSError, ValueError) as exc:
            log.info("emulator webhook: message %s not delivered to the receiver (%s)", payload["id"], exc)
            return Delivery(payload["id"], url, 0, f"{type(exc).__name__}: {exc}")

    def wait(self, timeout: float = 30.0) -> bool:
        """Wait until every queued payload was posted; False if ``timeout`` passed first."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True

    def stop(self) -> None:
        """End the posting thread after what is queued."""
        if self._thread is not None and self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(TIMEOUT * 2)
        self._thread = None

"""The emulator speaks Salebot's webhook: every message it delivers or a client writes, posted once."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from salebot_provider.hooks import SalebotHook
from salebot_provider.testing import SalebotEmulator
from salebot_provider.webhook.model import parse_message
from salebot_provider.webhook.receiver import ReceiverSettings, serve
from salebot_provider.webhook.spool import SpoolReader

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


class Catcher:
    """A webhook URL that keeps what it is sent and answers with the status it is told."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.bodies: list[dict[str, Any]] = []
        catcher = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                catcher.bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(catcher.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"


@pytest.fixture
def catcher() -> Iterator[Catcher]:
    catcher = Catcher()
    yield catcher
    catcher.server.shutdown()


@pytest.fixture
def emulator(monkeypatch: pytest.MonkeyPatch) -> Iterator[SalebotEmulator]:
    with SalebotEmulator(clients=5, seed=3) as emulator:
        monkeypatch.setenv("AIRFLOW_CONN_SALEBOT_DEFAULT", emulator.connection_json(backoff_factor=0))
        yield emulator


def test_a_client_reply_is_posted_as_salebot_posts_it(emulator: SalebotEmulator, catcher: Catcher) -> None:
    emulator.webhook(catcher.url)
    client_id = next(iter(emulator.state.clients))
    message_id = emulator.client_says(client_id, "Стоп", attachments=["https://f/1.jpg"])
    assert emulator.wait_webhook()
    [body] = catcher.bodies
    assert set(body) == {
        "id",
        "client",
        "message",
        "attachments",
        "message_id",
        "project_id",
        "is_input",
        "delivered",
        "error_message",
    }
    assert set(body["client"]) >= {
        "id",
        "recepient",
        "client_type",
        "name",
        "avatar",
        "created_at",
        "tag",
        "group",
    }
    message = parse_message(body)
    assert (message.id, message.client_id, message.is_input, message.text) == (
        str(message_id),
        client_id,
        True,
        "Стоп",
    )
    assert [a.url for a in message.attachments] == ["https://f/1.jpg"]
    history = emulator.state.history[client_id]
    assert (history[-1]["id"], history[-1]["client_replica"]) == (message_id, True)


def test_every_message_it_delivers_is_posted_with_is_input_0(
    emulator: SalebotEmulator, catcher: Catcher
) -> None:
    emulator.webhook(catcher.url)
    ids = list(emulator.state.clients)[:3]
    with SalebotHook() as hook:
        hook.message(ids[0], message="Ваш заказ готов")
        hook.broadcast(message="Скидка 20%", clients=ids)
        hook.callback(client_id=ids[1], message="/start")
    assert emulator.wait_webhook()
    sent = [(b["client"]["id"], b["message"], b["is_input"]) for b in catcher.bodies]
    assert sent == [
        (ids[0], "Ваш заказ готов", 0),
        *((i, "Скидка 20%", 0) for i in ids),
        (ids[1], "/start", 0),
    ]
    assert len({b["id"] for b in catcher.bodies}) == len(sent)  # each message its own id


def test_a_failed_post_is_never_repeated(emulator: SalebotEmulator) -> None:
    refusing = Catcher(status=500)
    emulator.webhook([refusing.url, "http://127.0.0.1:9/nobody-listens"])
    client_id = next(iter(emulator.state.clients))
    for text in ("one", "two", "three"):
        emulator.client_says(client_id, text)
    assert emulator.wait_webhook()
    deliveries = emulator.webhook_deliveries
    assert [d.status for d in deliveries] == [500, 0, 500]  # in turns, once each
    assert deliveries[1].error
    assert [b["message"] for b in refusing.bodies] == ["one", "three"]
    refusing.server.shutdown()


def test_the_admin_api_sets_the_webhook_and_makes_clients_reply(
    emulator: SalebotEmulator, catcher: Catcher
) -> None:
    admin = f"{emulator.base_url}/_emulator"
    client_id = next(iter(emulator.state.clients))
    assert httpx.post(f"{admin}/webhook", json={"url": catcher.url}).status_code == 200
    reply = httpx.post(f"{admin}/clients/{client_id}/says", json={"text": "хочу"})
    assert reply.status_code == 200
    assert emulator.wait_webhook()
    assert [b["id"] for b in catcher.bodies] == [reply.json()["id"]]
    assert httpx.get(f"{admin}/webhook").json()[0]["status"] == 200


def test_the_emulator_the_receiver_and_the_spool_end_to_end(
    emulator: SalebotEmulator, tmp_path: Path
) -> None:
    settings = ReceiverSettings(spool=tmp_path / "spool", secret="e2e-secret-" + "q" * 10)
    with serve(settings) as url:
        emulator.webhook(url)
        ids = list(emulator.state.clients)
        for n, client_id in enumerate(ids):
            emulator.client_says(client_id, f"ответ {n}")
        assert emulator.wait_webhook()
    assert [d.status for d in emulator.webhook_deliveries] == [200] * len(ids)
    records = [r for r, _, _ in SpoolReader(tmp_path / "spool").read()]
    assert [(r["message"]["client_id"], r["message"]["text"]) for r in records] == [
        (client_id, f"ответ {n}") for n, client_id in enumerate(ids)
    ]

"""The receiver: 200 only after the spool write, 400 and a dead letter, the secret path, and kill -9."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from starlette.testclient import TestClient

from salebot_provider.webhook import receiver as receiver_module
from salebot_provider.webhook.receiver import ReceiverSettings, create_app
from salebot_provider.webhook.spool import SpoolReader, list_segments

if TYPE_CHECKING:
    from collections.abc import Iterator

SECRET = "s3cr3t-path-" + "k" * 12


def payload(n: int, text: str = "привет", **extra: Any) -> dict[str, Any]:
    return {
        "id": n,
        "client": {"id": 40000000 + n, "client_type": 1},
        "message": text,
        "is_input": 1,
        **extra,
    }


def spooled(folder: Path) -> list[dict[str, Any]]:
    return [record for record, _, _ in SpoolReader(folder).read(1_000_000)]


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    app = create_app(ReceiverSettings(spool=tmp_path / "spool", secret=SECRET, name="r1", max_body=4096))
    with TestClient(app) as test_client:
        yield test_client


def test_a_message_is_spooled_before_the_200(
    client: TestClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    receiver = client.app.state.receiver  # type: ignore[attr-defined]
    seen_in_spool_at_append = []
    real = receiver.writer.append

    def append(line: bytes) -> None:
        real(line)
        seen_in_spool_at_append.append(len(spooled(tmp_path / "spool")))

    monkeypatch.setattr(receiver.writer, "append", append)
    reply = client.post(f"/{SECRET}", json=payload(1, attachments="['https://f/1.jpg']"))
    assert (reply.status_code, reply.json()) == (200, {"status": "ok"})
    assert seen_in_spool_at_append == [1]
    [record] = spooled(tmp_path / "spool")
    assert record["receiver"] == "r1"
    assert record["message"]["id"] == "1"
    assert record["message"]["attachments"] == [{"url": "https://f/1.jpg", "type": None, "name": None}]
    assert record["payload"] == payload(1, attachments="['https://f/1.jpg']")  # as posted, whole


def test_a_failed_spool_write_is_not_acknowledged(
    client: TestClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    receiver = client.app.state.receiver  # type: ignore[attr-defined]

    def full(line: bytes) -> None:
        raise OSError("the spool write failed: No space left on device")

    monkeypatch.setattr(receiver.writer, "append", full)
    reply = client.post(f"/{SECRET}", json=payload(1))
    assert reply.status_code == 503
    assert spooled(tmp_path / "spool") == []


def test_a_body_that_is_not_a_message_is_kept_whole_and_answered_400(
    client: TestClient, tmp_path: Path
) -> None:
    bodies = [b"not json", b'{"status": "ping"}', b"{'broken': ", b"\xff\xfe binary"]
    for body in bodies:
        reply = client.post(f"/{SECRET}", content=body, headers={"Content-Type": "application/json"})
        assert reply.status_code == 400
        assert reply.json()["status"] == "error"
    letters = [json.loads(x) for x in (tmp_path / "spool" / "deadletter.jsonl").read_text().splitlines()]
    assert [letter["body"] for letter in letters[:3]] == [b.decode() for b in bodies[:3]]
    assert letters[3]["body"] is None
    import base64

    assert base64.b64decode(letters[3]["body_base64"]) == bodies[3]
    assert all(letter["reason"] for letter in letters)
    assert spooled(tmp_path / "spool") == []


def test_a_big_body_is_parsed_off_the_event_loop_and_a_small_one_in_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    on_loop: list[bool] = []
    real = receiver_module.decode_body

    def decode_body(body: bytes) -> Any:
        try:
            asyncio.get_running_loop()
            on_loop.append(True)
        except RuntimeError:
            on_loop.append(False)
        return real(body)

    monkeypatch.setattr(receiver_module, "decode_body", decode_body)
    app = create_app(ReceiverSettings(spool=tmp_path / "spool", secret=SECRET, name="r1"))
    big = repr(payload(2, text="x" * 100_000)).encode()  # a Python literal, not JSON: the slow path
    with TestClient(app) as test_client:
        assert test_client.post(f"/{SECRET}", json=payload(1)).status_code == 200
        assert test_client.post(f"/{SECRET}", content=big).status_code == 200
    assert on_loop == [True, False]
    assert [r["message"]["id"] for r in spooled(tmp_path / "spool")] == ["1", "2"]


def test_an_oversized_body_is_refused_without_being_read(client: TestClient, tmp_path: Path) -> None:
    reply = client.post(f"/{SECRET}", content=b"x" * 5000)
    assert reply.status_code == 413

    def chunks() -> Iterator[bytes]:  # no Content-Length: refused as it grows past the limit
        for _ in range(10):
            yield b"y" * 1000

    assert client.post(f"/{SECRET}", content=chunks()).status_code == 413
    assert spooled(tmp_path / "spool") == []
    assert client.get("/healthz").json()["too_large"] == 2


def test_only_the_secret_path_takes_messages_and_the_logs_never_show_it(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    for path in ("/", "/webhook", f"/{SECRET[:-1]}", f"/{SECRET}/x"):
        assert client.post(path, json=payload(1)).status_code in (404, 405)
    assert client.get(f"/{SECRET}").status_code == 405
    client.post(f"/{SECRET}", content=b"junk")
    client.post(f"/{SECRET}", json=payload(2))
    health = client.get("/healthz")
    assert health.status_code == 200
    assert health.json()["accepted"] == 1
    # The receiver's and the server's loggers (the test's own HTTP client logs the URL it calls).
    ours = [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith(("salebot_provider", "uvicorn", "starlette"))
    ]
    assert ours
    assert not [m for m in ours if SECRET in m]
    assert SECRET not in health.text


@pytest.mark.parametrize("secret", ["", "short", "has space" * 3, "x" * 15])
def test_a_weak_or_odd_secret_is_refused(tmp_path: Path, secret: str) -> None:
    with pytest.raises(ValueError, match="secret: give at least 16 URL-safe characters"):
        ReceiverSettings(spool=tmp_path, secret=secret)


def test_shutdown_closes_the_open_segment(tmp_path: Path) -> None:
    app = create_app(ReceiverSettings(spool=tmp_path / "spool", secret=SECRET))
    with TestClient(app) as test_client:
        test_client.post(f"/{SECRET}", json=payload(1))
        assert [closed for _, _, closed in list_segments(tmp_path / "spool")] == [False]
    assert [closed for _, _, closed in list_segments(tmp_path / "spool")] == [True]


def test_closed_segments_are_shipped_to_object_storage_once(tmp_path: Path) -> None:
    ship_to = tmp_path / "shipped"
    settings = ReceiverSettings(
        spool=tmp_path / "spool", secret=SECRET, name="r1", segment_bytes=400, ship_to=f"file://{ship_to}"
    )
    app = create_app(settings)
    with TestClient(app) as test_client:
        for n in range(6):
            test_client.post(f"/{SECRET}", json=payload(n))
        receiver = app.state.receiver
        closed = [p for _, p, c in list_segments(tmp_path / "spool") if c]
        assert closed
        assert receiver.ship() == len(closed)
        assert receiver.ship() == 0
    shipped = sorted(p.name for p in (ship_to / "r1").iterdir())
    assert shipped == [p.name for _, p, _ in list_segments(tmp_path / "spool")]  # the last one at shutdown
    for name in shipped:
        assert (ship_to / "r1" / name).read_bytes() == (tmp_path / "spool" / name).read_bytes()


# ------------------------------------------------------------------------------ over real HTTP


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(spool: Path, port: int, *extra: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """The ``salebot-webhook`` console script, as a user runs it."""
    process = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("salebot-webhook")),
            "--spool",
            str(spool),
            "--port",
            str(port),
            *extra,
        ],
        env={**os.environ, "SALEBOT_WEBHOOK_SECRET": SECRET, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.05)
    process.kill()
    raise AssertionError(f"the receiver did not start: {process.communicate()[0][-2000:]!r}")


def test_over_http_a_kill_9_loses_nothing_that_was_acknowledged(tmp_path: Path) -> None:
    spool, port = tmp_path / "spool", free_port()
    process = start(spool, port)
    url = f"http://127.0.0.1:{port}/{SECRET}"
    with httpx.Client() as http:
        for n in range(50):
            assert http.post(url, json=payload(n)).status_code == 200
    process.send_signal(signal.SIGKILL)
    process.wait()
    output = process.stdout.read().decode() if process.stdout else ""
    assert SECRET not in output
    assert [r["message"]["id"] for r in spooled(spool)] == [str(n) for n in range(50)]
    process = start(spool, port)  # it starts again on the same spool
    try:
        with httpx.Client() as http:
            assert http.post(url, json=payload(50)).status_code == 200
        assert [r["message"]["id"] for r in spooled(spool)] == [str(n) for n in range(51)]
    finally:
        process.terminate()
        process.wait(10)
    assert all(closed for _, _, closed in list_segments(spool))  # SIGTERM: a graceful stop


@pytest.mark.parametrize("fsync", [False, True])
def test_killed_at_a_random_moment_under_load_every_acknowledged_message_survives(
    tmp_path: Path, fsync: bool
) -> None:
    spool, port = tmp_path / "spool", free_port()
    process = start(spool, port, "--segment-bytes", "20000", *(["--fsync"] if fsync else []))
    url = f"http://127.0.0.1:{port}/{SECRET}"
    acknowledged: list[str] = []
    lock = threading.Lock()

    def post(first: int) -> None:
        with httpx.Client(timeout=5) as http:
            for n in range(first, first + 10_000):
                try:
                    reply = http.post(url, json=payload(n, text="x" * (n % 300)))
                except httpx.HTTPError:
                    return  # the receiver is gone
                if reply.status_code == 200:
                    with lock:
                        acknowledged.append(str(n))

    threads = [threading.Thread(target=post, args=(k * 100_000,)) for k in range(6)]
    for thread in threads:
        thread.start()
    time.sleep(random.uniform(0.5, 1.5))
    process.send_signal(signal.SIGKILL)
    process.wait()
    for thread in threads:
        thread.join()
    assert len(acknowledged) > 50
    process = start(spool, port)  # recovery: a half-written line is cut off
    process.terminate()
    process.wait(10)
    records = spooled(spool)
    assert all(r.get("v") == 1 for r in records)  # every line whole
    in_spool = [r["message"]["id"] for r in records]
    assert set(acknowledged) <= set(in_spool)
    assert len(in_spool) == len(set(in_spool))  # and none twice


def test_a_second_receiver_on_the_same_spool_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    spool, port = tmp_path / "spool", free_port()
    process = start(spool, port)
    try:
        second = subprocess.run(
            [str(Path(sys.executable).with_name("salebot-webhook")), "--spool", str(spool)],
            env={**os.environ, "SALEBOT_WEBHOOK_SECRET": SECRET},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert second.returncode == 1
        assert f"spool folder {spool} is in use by another receiver (process {process.pid})" in second.stderr
        assert "Traceback" not in second.stderr
        with httpx.Client() as http:  # the first goes on
            assert http.post(f"http://127.0.0.1:{port}/{SECRET}", json=payload(1)).status_code == 200
    finally:
        process.terminate()
        process.wait(10)


def test_the_console_script_refuses_a_missing_secret(tmp_path: Path) -> None:
    done = subprocess.run(
        [str(Path(sys.executable).with_name("salebot-webhook")), "--spool", str(tmp_path)],
        env={k: v for k, v in os.environ.items() if k != "SALEBOT_WEBHOOK_SECRET"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert "secret: give at least 16 URL-safe characters" in done.stderr


def test_the_secret_can_come_from_a_file(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text(SECRET + "\n")
    settings, host, port = receiver_module._settings_from(
        ["--spool", str(tmp_path), "--secret-file", str(tmp_path / "secret")]
    )
    assert (settings.path, host, port) == (f"/{SECRET}", "127.0.0.1", 8765)

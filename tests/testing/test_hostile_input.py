"""The emulator under input no client should send: broken framing, hostile JSON, bad faults, slow clients."""

from __future__ import annotations

import json
import math
import socket
from typing import TYPE_CHECKING, Any

import pytest
import requests

from salebot_provider.testing import Fault, SalebotEmulator

if TYPE_CHECKING:
    from collections.abc import Iterator

#: How long a test waits for the emulator to answer or to close: far longer than it needs.
PATIENCE = 10.0


@pytest.fixture(scope="module")
def server() -> Iterator[SalebotEmulator]:
    with SalebotEmulator(read_timeout=0.5) as emulator:
        yield emulator


@pytest.fixture
def emu(server: SalebotEmulator) -> Iterator[SalebotEmulator]:
    server.reset()
    yield server
    server.reset()


def connect(emu: SalebotEmulator) -> socket.socket:
    return socket.create_connection(("127.0.0.1", emu.port), timeout=PATIENCE)


def until_closed(sock: socket.socket) -> bytes:
    """Everything the emulator sends until it closes the connection; a socket.timeout if it never does."""
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


def post_raw(emu: SalebotEmulator, headers: str, body: bytes = b"") -> bytes:
    with connect(emu) as sock:
        path = f"/api/{emu.api_key}/message"
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\n{headers}\r\n".encode() + body)
        return until_closed(sock)


def post_json(url: str, body: Any) -> requests.Response:
    """POST as JSON, NaN and Infinity included (which Python's json writes and reads, unlike requests)."""
    return requests.post(url, data=json.dumps(body), timeout=PATIENCE)


def still_serves(emu: SalebotEmulator) -> bool:
    return requests.get(f"{emu.base_url}/api/{emu.api_key}/get_messages", timeout=PATIENCE).ok


# ------------------------------------------------------------------------------------- framing


@pytest.mark.parametrize("length", ["abc", "-5", "1e3", "5, 5"])
def test_a_content_length_that_is_not_a_count_is_a_400_and_the_connection_closes(
    emu: SalebotEmulator, length: str
) -> None:
    reply = post_raw(emu, f"Content-Length: {length}\r\n", b'{"client_id": 1}')
    assert reply.startswith(b"HTTP/1.1 400 "), reply[:80]
    assert b"Content-Length" in reply
    assert emu.outbox == []
    assert still_serves(emu)


def test_a_body_shorter_than_announced_is_a_400_after_the_read_timeout(emu: SalebotEmulator) -> None:
    with connect(emu) as sock:
        sock.sendall(
            f"POST /api/{emu.api_key}/message HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n".encode()
            + b'{"client_id": 1'
        )
        reply = until_closed(sock)
    assert reply.startswith(b"HTTP/1.1 400 "), reply[:80]
    assert b"shorter than its Content-Length" in reply
    assert still_serves(emu)


def test_a_body_that_ends_early_is_a_400(emu: SalebotEmulator) -> None:
    with connect(emu) as sock:
        sock.sendall(
            f"POST /api/{emu.api_key}/message HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{{}}".encode()
        )
        sock.shutdown(socket.SHUT_WR)
        reply = until_closed(sock)
    assert reply.startswith(b"HTTP/1.1 400 "), reply[:80]
    assert emu.outbox == []


def test_a_huge_content_length_is_refused_at_once(emu: SalebotEmulator) -> None:
    reply = post_raw(emu, f"Content-Length: {10**15}\r\n")
    assert reply.startswith(b"HTTP/1.1 413 "), reply[:80]


def test_silent_and_half_sent_requests_are_closed_and_others_still_served(emu: SalebotEmulator) -> None:
    silent, half_line, half_headers = connect(emu), connect(emu), connect(emu)
    half_line.sendall(b"GET /api/")
    half_headers.sendall(f"GET /api/{emu.api_key}/get_messages HTTP/1.1\r\nHost: x\r\n".encode())
    try:
        assert still_serves(emu)
        for sock in (silent, half_line, half_headers):
            assert until_closed(sock) == b""
    finally:
        for sock in (silent, half_line, half_headers):
            sock.close()
    assert still_serves(emu)


def test_an_idle_kept_alive_connection_is_closed_by_the_read_timeout(emu: SalebotEmulator) -> None:
    with connect(emu) as sock:
        sock.sendall(f"GET /api/{emu.api_key}/get_messages HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        reply = until_closed(sock)
    assert reply.startswith(b"HTTP/1.1 200 ")


def test_read_timeout_must_be_positive() -> None:
    for bad in (0, -1, math.nan, "10"):
        with pytest.raises(ValueError, match="read_timeout"):
            SalebotEmulator(read_timeout=bad)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------- JSON


DEEP = "[" * 100_000
NESTED_BELOW_THE_RECURSION_LIMIT = "[" * 600 + "]" * 600


@pytest.mark.parametrize("body", [DEEP, NESTED_BELOW_THE_RECURSION_LIMIT, "{oops", b"\xff\xfe"])
def test_malformed_or_deeply_nested_json_is_a_400_on_the_api(emu: SalebotEmulator, body: str | bytes) -> None:
    cid = emu.add_client("1")
    raw = body if isinstance(body, bytes) else f'{{"client_id": {cid}, "variables": {{"a": {body}}}}}'
    reply = requests.post(f"{emu.base_url}/api/{emu.api_key}/save_variables", data=raw, timeout=PATIENCE)
    assert reply.status_code == 400
    assert reply.json()["status"] == "fail"
    assert emu.client(cid).variables == {}
    admin = f"{emu.base_url}/_emulator"
    assert requests.get(f"{admin}/clients/{cid}", timeout=PATIENCE).ok
    assert requests.get(f"{admin}/requests", timeout=PATIENCE).ok


@pytest.mark.parametrize("route", ["faults", "clients", "clock", "lists"])
@pytest.mark.parametrize("body", [DEEP, NESTED_BELOW_THE_RECURSION_LIMIT, "{oops"])
def test_malformed_or_deeply_nested_json_is_a_400_on_the_admin_api(
    emu: SalebotEmulator, route: str, body: str
) -> None:
    raw = body if body == "{oops" else f'{{"list_id": {body}}}'
    reply = requests.post(f"{emu.base_url}/_emulator/{route}", data=raw, timeout=PATIENCE)
    assert reply.status_code == 400
    assert "JSON" in reply.json()["error"]


def test_json_nested_as_deep_as_the_api_needs_is_accepted(emu: SalebotEmulator) -> None:
    cid = emu.add_client("1")
    nested: Any = "x"
    for _ in range(31):  # 62 levels, with the body and "variables" 64
        nested = {"a": [nested]}
    body = {"client_id": cid, "variables": {"client.deep": nested}}
    assert requests.post(f"{emu.base_url}/api/{emu.api_key}/save_variables", json=body, timeout=PATIENCE).ok
    assert emu.client(cid).variables["deep"] == nested


# ------------------------------------------------------------------------------------- fault rules

BAD_FAULTS = [
    ({"latency": -1}, "latency"),
    ({"latency": "slow"}, "latency"),
    ({"latency": math.nan}, "latency"),
    ({"latency": math.inf}, "latency"),
    ({"latency": 1e12}, "latency"),
    ({"latency": [0.3, 0.1]}, "latency"),
    ({"latency": [0.1, "x"]}, "latency"),
    ({"latency": [0.1, 0.2, 0.3]}, "latency"),
    ({"status": 503, "times": 1.5}, "times"),
    ({"status": 503, "times": -1}, "times"),
    ({"status": 503, "times": "2"}, "times"),
    ({"status": 503, "times": True}, "times"),
    ({"status": 503, "rate": 1.5}, "rate"),
    ({"status": 503, "rate": -0.1}, "rate"),
    ({"status": 503, "rate": math.nan}, "rate"),
    ({"status": 503, "rate": "0.5"}, "rate"),
    ({"status": "503"}, "status"),
    ({"status": 200}, "status"),
    ({"status": True}, "status"),
    ({"reset": "false"}, "reset"),
    ({"html": 1}, "html"),
    ({"status": 503, "colour": "red"}, "colour"),
    ({"status": 503, "hits": 3}, "hits"),
]


@pytest.mark.parametrize(("spec", "field"), BAD_FAULTS)
def test_the_admin_api_refuses_a_fault_it_cannot_honour(
    emu: SalebotEmulator, spec: dict[str, Any], field: str
) -> None:
    reply = post_json(f"{emu.base_url}/_emulator/faults", spec)
    assert reply.status_code == 400
    assert field in reply.json()["error"]
    assert emu.faults.rules == []
    assert still_serves(emu)


@pytest.mark.parametrize(("spec", "field"), BAD_FAULTS)
def test_inject_refuses_a_fault_it_cannot_honour(
    emu: SalebotEmulator, spec: dict[str, Any], field: str
) -> None:
    with pytest.raises(ValueError, match=field):
        emu.inject("get_messages", **spec)
    assert emu.faults.rules == []


def test_a_fault_of_the_full_range_is_accepted(emu: SalebotEmulator) -> None:
    spec = {"latency": [0, 0.01], "status": 503, "rate": 1, "times": 0, "processed": True}
    reply = requests.post(f"{emu.base_url}/_emulator/faults", json=spec, timeout=PATIENCE)
    assert reply.status_code == 200, reply.text
    assert Fault(latency=0.5, rate=0.0, times=3).latency == 0.5


@pytest.mark.parametrize("advance", [math.nan, math.inf, -5, "soon", True])
def test_the_clock_refuses_an_advance_that_is_not_forward_and_finite(
    emu: SalebotEmulator, advance: Any
) -> None:
    before = requests.get(f"{emu.base_url}/_emulator/state", timeout=PATIENCE).json()["time"]
    reply = post_json(f"{emu.base_url}/_emulator/clock", {"advance": advance})
    assert reply.status_code == 400
    assert "advance" in reply.json()["error"]
    with pytest.raises(ValueError, match="advance"):
        emu.advance(advance)
    after = requests.get(f"{emu.base_url}/_emulator/state", timeout=PATIENCE).json()["time"]
    assert after - before < 60
    assert still_serves(emu)


@pytest.mark.parametrize(
    ("route", "body", "field"),
    [
        ("rate_limit", {"per_second": math.nan}, "per_second"),
        ("rate_limit", {"per_second": "fast"}, "per_second"),
        ("deals/{deal}/auto_advance", {"every": math.nan}, "every"),
        ("deals/{deal}/auto_advance", {"every": 0}, "every"),
    ],
)
def test_rate_limits_and_auto_advance_refuse_what_they_cannot_honour(
    emu: SalebotEmulator, route: str, body: dict[str, Any], field: str
) -> None:
    cid = emu.add_client("1")
    with emu.state.lock:
        deal = emu.state.add_deal(cid).id
    target = f"{emu.base_url}/_emulator/{route.format(deal=deal)}"
    reply = post_json(target, body)
    assert reply.status_code == 400
    assert field in reply.json()["error"]
    assert still_serves(emu)


# ------------------------------------------------------------------------------------- IPv6


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback on this machine")
def test_the_emulator_serves_on_ipv6(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.models.connection import Connection

    from salebot_provider.hooks import SalebotHook

    with SalebotEmulator(host="::1") as emulator:
        assert emulator.base_url == f"http://[::1]:{emulator.port}"
        assert still_serves(emulator)
        parsed = Connection(conn_id="x", uri=emulator.connection_uri())
        assert (parsed.host, parsed.port) == ("http://[::1]", emulator.port)
        for conn in (emulator.connection_json(), emulator.connection_uri()):
            monkeypatch.setenv("AIRFLOW_CONN_SALEBOT_DEFAULT", conn)
            assert SalebotHook().get_messages()["status"] == "success"
        assert len(emulator.requests) == 3

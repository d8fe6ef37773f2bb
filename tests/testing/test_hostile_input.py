"""The emulator under input no client should send: broken framing, hostile JSON, bad faults, slow clients."""

from __future__ import annotations

import json
import math
import select
import socket
import time
from typing import TYPE_CHECKING, Any

import pytest
import requests

from salebot_provider.testing import Fault, SalebotEmulator
from salebot_provider.testing.faults import MAX_RETRY_AFTER, finite_number
from salebot_provider.testing.handlers import MAX_AHEAD
from salebot_provider.testing.state import MAX_SEED

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


def strict_json(reply: requests.Response) -> Any:
    """The reply's JSON, refusing NaN and Infinity, which Python's json reads but JSON does not have."""

    def refuse(constant: str) -> Any:
        raise AssertionError(f"the emulator sent {constant}, which is not JSON: {reply.text[:200]}")

    return json.loads(reply.text, parse_constant=refuse)


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


TRICKLED = {
    "request line": (b"", b"GET /api/" + b"a" * 4000),
    "headers": (b"GET /_emulator/state HTTP/1.1\r\n", b"X-Slow: " + b"a" * 4000),
    "body": (b"POST /_emulator/clock HTTP/1.1\r\nContent-Length: 4000\r\n\r\n", b"a" * 4000),
}


@pytest.mark.parametrize("part", list(TRICKLED))
def test_a_client_trickling_a_request_is_cut_off_at_the_read_timeout(part: str) -> None:
    # Each byte comes well within the read timeout: only a deadline for the whole request ends it.
    start, trickled = TRICKLED[part]
    with SalebotEmulator(read_timeout=1) as emulator, connect(emulator) as sock:
        sock.sendall(start)
        began = time.monotonic()
        for byte in trickled:
            if time.monotonic() - began > PATIENCE or select.select([sock], [], [], 0.3)[0]:
                break
            sock.sendall(bytes([byte]))
            assert still_serves(emulator)
        reply = until_closed(sock)
        assert time.monotonic() - began < PATIENCE, f"the {part} trickled on for {PATIENCE} s"
        assert still_serves(emulator)
    if part == "body":
        assert reply.startswith(b"HTTP/1.1 400 "), reply[:80]
        assert b"came too slowly" in reply
    else:
        assert reply == b""


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


# ------------------------------------------------------------------------------------- numbers


@pytest.mark.parametrize("clients", [math.inf, math.nan, 1e9, 10**9, MAX_SEED + 1, 2.5, -1, True, "5", None])
def test_the_admin_api_seeds_only_a_whole_number_of_clients_up_to_the_cap(
    emu: SalebotEmulator, clients: Any
) -> None:
    reply = post_json(f"{emu.base_url}/_emulator/seed", {"clients": clients})
    assert reply.status_code == 400
    assert "clients" in strict_json(reply)["error"]
    assert emu.state.clients == {}
    assert still_serves(emu)


@pytest.mark.parametrize("seed", [1.5, math.inf, "1", True, 2**64])
def test_the_admin_api_refuses_a_seed_that_is_not_a_whole_number(emu: SalebotEmulator, seed: Any) -> None:
    reply = post_json(f"{emu.base_url}/_emulator/seed", {"clients": 2, "seed": seed})
    assert reply.status_code == 400
    assert "seed" in strict_json(reply)["error"]
    assert emu.state.clients == {}


def test_the_cap_on_seeded_clients_holds_in_python_too() -> None:
    for bad in (MAX_SEED + 1, 1e3, True):
        with pytest.raises(ValueError, match="clients must be a whole number"):
            SalebotEmulator(clients=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("id_text", ["%D9%A1%D9%A2", "1_000", "+5", "%205", str(10**19), "abc", "1.5"])
def test_the_admin_api_takes_only_ascii_digits_as_an_id_in_a_path(emu: SalebotEmulator, id_text: str) -> None:
    admin = f"{emu.base_url}/_emulator"
    replies = [
        requests.get(f"{admin}/clients/{id_text}", timeout=PATIENCE),
        requests.get(f"{admin}/deals/{id_text}", timeout=PATIENCE),
        post_json(f"{admin}/clients/{id_text}/messages", {"text": "hi"}),
        post_json(f"{admin}/deals/{id_text}/auto_advance", {"every": 30}),
    ]
    assert [r.status_code for r in replies] == [400] * 4
    assert all("id in the path" in strict_json(r)["error"] for r in replies)
    assert requests.get(f"{admin}/clients/{2**63 - 1}", timeout=PATIENCE).status_code == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"list_id": 1.5}, "list_id"),
        ({"list_id": "5"}, "list_id"),
        ({"list_id": True}, "list_id"),
        ({"list_id": 2**63}, "list_id"),
        ({"list_id": math.inf}, "list_id"),
        ({"clients": "123"}, "clients"),
        ({"clients": ["1"]}, "clients"),
        ({"clients": [1e400]}, "clients"),
        ({"clients": [1.0]}, "clients"),
    ],
)
def test_the_admin_api_refuses_a_list_with_ids_that_are_not_whole_numbers(
    emu: SalebotEmulator, body: dict[str, Any], field: str
) -> None:
    lists = dict(emu.state.lists)
    reply = post_json(f"{emu.base_url}/_emulator/lists", body)
    assert reply.status_code == 400
    assert field in strict_json(reply)["error"]
    assert emu.state.lists == lists


@pytest.mark.parametrize("client_type", [1.5, "1", None, math.inf])
def test_the_admin_api_refuses_a_client_type_that_is_not_a_whole_number(
    emu: SalebotEmulator, client_type: Any
) -> None:
    reply = post_json(f"{emu.base_url}/_emulator/clients", {"platform_id": "7", "client_type": client_type})
    assert reply.status_code == 400
    assert "client_type" in strict_json(reply)["error"]
    assert emu.state.clients == {}


@pytest.mark.parametrize("time_shift", [math.inf, -math.inf, math.nan, 1e400, 10**400, 1e308, MAX_AHEAD + 1])
def test_a_time_shift_that_is_not_finite_or_over_ten_years_is_a_fail_in_a_body(
    emu: SalebotEmulator, time_shift: Any
) -> None:
    cid = emu.add_client("1")
    body = {"client_id": cid, "message": "hi", "time_shift": time_shift}
    reply = post_json(f"{emu.base_url}/api/{emu.api_key}/message", body)
    assert reply.status_code in (200, 400)
    assert strict_json(reply)["status"] == "fail"
    assert "time_shift" in reply.json()["message"]
    assert emu.outbox == []
    strict_json(requests.get(f"{emu.base_url}/_emulator/outbox", timeout=PATIENCE))


@pytest.mark.parametrize("time_shift", ["inf", "Infinity", "nan", "1e400", "1e308", "1_000", "0x10", "²"])
def test_a_time_shift_that_is_not_a_finite_decimal_is_a_fail_in_a_query(
    emu: SalebotEmulator, time_shift: str
) -> None:
    cid = emu.add_client("1")
    params = {"client_id": str(cid), "message": "hi", "time_shift": time_shift}
    reply = requests.get(f"{emu.base_url}/api/{emu.api_key}/message", params=params, timeout=PATIENCE)
    assert reply.status_code == 200
    assert strict_json(reply) == {"status": "fail", "message": reply.json()["message"]}
    assert "time_shift" in reply.json()["message"]
    assert emu.outbox == []


def test_a_time_shift_of_ten_years_is_accepted(emu: SalebotEmulator) -> None:
    cid = emu.add_client("1")
    body = {"client_id": cid, "message": "hi", "time_shift": MAX_AHEAD}
    reply = post_json(f"{emu.base_url}/api/{emu.api_key}/message", body)
    assert strict_json(reply) == {"status": "success"}
    outbox = strict_json(requests.get(f"{emu.base_url}/_emulator/outbox", timeout=PATIENCE))
    assert outbox[0]["due_at"] - outbox[0]["created_at"] == pytest.approx(MAX_AHEAD)


@pytest.mark.parametrize(
    ("shift", "recipients"), [(math.inf, 2), (1e308, 2), ("inf", 2), (MAX_AHEAD, 3), (MAX_AHEAD / 2, 3)]
)
def test_a_broadcast_shift_that_spreads_sends_past_ten_years_is_a_fail(
    emu: SalebotEmulator, shift: Any, recipients: int
) -> None:
    ids = [emu.add_client(str(n)) for n in range(recipients)]
    body = {"clients": ids, "message": "hi", "shift": shift}
    reply = post_json(f"{emu.base_url}/api/{emu.api_key}/broadcast", body)
    if shift == MAX_AHEAD / 2:
        assert strict_json(reply) == {"status": "success"}
        return
    assert strict_json(reply)["status"] == "fail"
    assert "shift" in reply.json()["message"]
    assert emu.outbox == []


@pytest.mark.parametrize("budget", [math.inf, math.nan, 10**400, "1e400", "inf", True])
def test_a_budget_that_is_not_a_finite_number_is_a_fail(emu: SalebotEmulator, budget: Any) -> None:
    cid = emu.add_client("1")
    reply = post_json(f"{emu.base_url}/api/{emu.api_key}/create_order", {"client_id": cid, "budget": budget})
    assert strict_json(reply)["status"] == "fail"
    assert "budget" in reply.json()["message"]
    assert emu.state.deals == {}


def test_nan_deep_in_a_body_is_refused_naming_the_parameter(emu: SalebotEmulator) -> None:
    cid = emu.add_client("1")
    body = {"client_id": cid, "variables": {"client.scores": [1, {"x": math.nan}]}}
    reply = post_json(f"{emu.base_url}/api/{emu.api_key}/save_variables", body)
    assert reply.status_code == 400
    assert strict_json(reply)["status"] == "fail"
    assert '"variables"' in reply.json()["message"]
    assert emu.client(cid).variables == {}
    got = requests.get(f"{emu.base_url}/api/{emu.api_key}/get_variables?client_id={cid}", timeout=PATIENCE)
    assert strict_json(got)["variables"] == {}
    strict_json(requests.get(f"{emu.base_url}/_emulator/requests", timeout=PATIENCE))


def test_nan_set_from_python_gives_a_500_in_json_not_invalid_json(emu: SalebotEmulator) -> None:
    cid = emu.add_client("1", variables={"score": math.nan})
    reply = requests.get(f"{emu.base_url}/_emulator/clients/{cid}", timeout=PATIENCE)
    assert reply.status_code == 500
    assert "NaN" in strict_json(reply)["message"]
    assert still_serves(emu)


@pytest.mark.parametrize("id_text", ["²", "١٢", "9" * 5000])
def test_digits_of_other_scripts_or_too_many_are_a_format_error_not_a_500(
    emu: SalebotEmulator, id_text: str
) -> None:
    api = f"{emu.base_url}/api/{emu.api_key}"
    reply = requests.get(f"{api}/get_clients", params={"offset": id_text}, timeout=PATIENCE)
    assert reply.status_code == 200
    assert strict_json(reply)["status"] == "fail"
    deleted = post_json(f"{api}/delete_clients", {"client_ids": [id_text]})
    assert strict_json(deleted) == {"status": "success"}


def test_the_clock_stops_short_of_the_year_9000(emu: SalebotEmulator) -> None:
    reply = post_json(f"{emu.base_url}/_emulator/clock", {"advance": 1e308})
    assert reply.status_code == 400
    assert "advance" in strict_json(reply)["error"]
    with pytest.raises(ValueError, match="year 9000"):
        emu.advance(1e308)
    strict_json(requests.get(f"{emu.base_url}/_emulator/state", timeout=PATIENCE))


def test_a_tiny_auto_advance_period_is_refused_and_the_shortest_one_ends_at_the_funnel_end(
    emu: SalebotEmulator,
) -> None:
    cid = emu.add_client("1")
    with emu.state.lock:
        order = emu.state.add_deal(cid).id
    reply = post_json(f"{emu.base_url}/_emulator/deals/{order}/auto_advance", {"every": 1e-300})
    assert reply.status_code == 400
    assert "every" in strict_json(reply)["error"]
    emu.auto_advance(order, every=0.001)
    emu.advance(10**6)  # a billion periods: the funnel ends after three
    assert emu.deal(order).state_id == 104


def test_a_rate_limit_near_zero_answers_429_with_a_bounded_retry_after(emu: SalebotEmulator) -> None:
    emu.rate_limit(5e-324)
    assert still_serves(emu)
    reply = requests.get(f"{emu.base_url}/api/{emu.api_key}/get_messages", timeout=PATIENCE)
    assert reply.status_code == 429
    assert reply.headers["Retry-After"] == str(MAX_RETRY_AFTER)


@pytest.mark.parametrize(
    ("value", "finite"),
    [
        (1, True),
        (0.5, True),
        (-3, True),
        (True, False),
        (math.nan, False),
        (math.inf, False),
        (10**400, False),
    ],
)
def test_finite_number_says_whether_the_emulator_can_compute_with_a_value(value: Any, finite: bool) -> None:
    assert finite_number(value) is finite

"""SalebotHook against hostile servers, hostile input and a new user's first-hour mistakes."""

from __future__ import annotations

import functools
import json
import os
import socket
import threading
import time
from typing import TYPE_CHECKING, Any

import pytest
import requests

from salebot_provider import api
from salebot_provider.exceptions import (
    SalebotAPIError,
    SalebotConnectionError,
    SalebotError,
    SalebotNotFoundError,
    SalebotValidationError,
)
from salebot_provider.hooks import SalebotHook
from salebot_provider.hooks import salebot as hook_module
from tests.conftest import API_KEY, Reply, ScriptedServer, url

if TYPE_CHECKING:
    from collections.abc import Iterator

    import requests_mock as rm

# ------------------------------------------------------------------------------------- hostile replies


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_is_never_followed(server: ScriptedServer, status: int) -> None:
    target = f"{server.base_url}/api/{API_KEY}/get_messages?leak={API_KEY}"
    server.script = [Reply(status=status, body=b"", headers={"Location": target})]
    with pytest.raises(SalebotAPIError, match=f"HTTP {status}: a redirect") as info:
        SalebotHook().message(1, message="hi")
    assert [(s.method, s.action) for s in server.seen] == [("POST", "message")]
    assert "Location" not in str(info.value)
    assert "get_messages" not in str(info.value)
    assert API_KEY not in str(info.value)


def test_a_read_is_not_retried_after_a_redirect(server: ScriptedServer) -> None:
    server.script = [Reply(status=301, body=b"", headers={"Location": "https://elsewhere.test/"})]
    with pytest.raises(SalebotAPIError, match="HTTP 301"):
        SalebotHook().get_messages()
    assert len(server.seen) == 1


def test_deeply_nested_json_is_a_typed_error_retried_for_a_read_only(server: ScriptedServer) -> None:
    server.default = Reply(body=b"[" * 100_000)
    with pytest.raises(SalebotAPIError, match="not JSON") as read:
        SalebotHook().get_messages()
    assert len(server.seen) == 3  # max_retries=2 in the test connection
    server.seen.clear()
    with pytest.raises(SalebotAPIError, match="not retried so that nobody gets it twice") as send:
        SalebotHook().message(1, message="hi")
    assert send.value.in_doubt
    assert read.value.in_doubt
    assert len(server.seen) == 1


def test_a_decode_failure_in_a_chunk_sets_the_chunk_fields(server: ScriptedServer) -> None:
    server.script = [Reply(), Reply(body=b"[" * 100_000)]
    chunks = SalebotHook().iter_chunked("add_to_list", [1, 2, 3, 4, 5], chunk_size=2, list_id=9)
    assert next(chunks).items == [1, 2]
    with pytest.raises(SalebotAPIError) as info:
        next(chunks)
    assert info.value.failed_chunk == [3, 4]
    assert info.value.items_done == 2


def test_a_bad_content_encoding_is_a_typed_error(server: ScriptedServer) -> None:
    server.default = Reply(body=b"not gzip at all", headers={"Content-Encoding": "gzip"})
    with pytest.raises(SalebotAPIError, match="Content-Encoding") as info:
        SalebotHook().message(1, message="hi")
    assert info.value.in_doubt is True
    assert len(server.seen) == 1


def test_timeout_bounds_the_whole_reply_of_a_trickling_server(
    server: ScriptedServer, salebot_conn: Any
) -> None:
    salebot_conn(server.base_url, timeout=1, max_retries=0)
    # 200 bytes, one every 0.1 s: each read is quick, the whole would take 20 s.
    server.script = [Reply(body={"status": "success", "pad": "x" * 170}, trickle=0.1)]
    started = time.monotonic()
    with pytest.raises(SalebotConnectionError, match="no whole reply within 1s") as info:
        SalebotHook().message(1, message="hi")
    assert time.monotonic() - started < 10
    assert info.value.in_doubt is True
    assert "not retried so that nobody gets it twice" in str(info.value)


def _trickling_headers_server(connections: int = 1) -> socket.socket:
    """A server that sends its status line and headers a byte every 0.1 s: 20 s in all."""
    listener = socket.create_server(("127.0.0.1", 0))
    head = b"HTTP/1.1 200 OK\r\n" + b"X-Pad: " + b"x" * 180 + b"\r\n\r\n"

    def serve(conn: socket.socket) -> None:
        with conn:
            conn.recv(65536)
            for byte in head:
                time.sleep(0.1)
                try:
                    conn.sendall(bytes([byte]))
                except OSError:
                    return

    def accept() -> None:
        for _ in range(connections):
            conn, _ = listener.accept()
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return listener


def test_timeout_bounds_headers_that_trickle(salebot_conn: Any) -> None:
    listener = _trickling_headers_server()
    salebot_conn(f"http://127.0.0.1:{listener.getsockname()[1]}", timeout=1, max_retries=0)
    started = time.monotonic()
    with pytest.raises(SalebotConnectionError, match="no whole reply within 1s") as info:
        SalebotHook().message(1, message="hi")
    assert time.monotonic() - started < 10
    assert info.value.in_doubt is True
    listener.close()


def test_the_headers_deadline_holds_in_a_forked_worker(salebot_conn: Any) -> None:
    listener = _trickling_headers_server(connections=2)
    salebot_conn(f"http://127.0.0.1:{listener.getsockname()[1]}", timeout=1, max_retries=0)
    with pytest.raises(SalebotConnectionError):
        SalebotHook().get_messages()  # the deadline thread now runs in this process
    pid = os.fork()
    if pid == 0:  # the child: a worker forked from a process that had used the hook
        started = time.monotonic()
        try:
            SalebotHook().get_messages()
        except SalebotConnectionError:
            os._exit(0 if time.monotonic() - started < 10 else 1)
        os._exit(2)
    _, status = os.waitpid(pid, 0)
    listener.close()
    assert os.waitstatus_to_exitcode(status) == 0


def test_a_whole_reply_read_in_pieces_keeps_the_connection(server: ScriptedServer) -> None:
    big = {"status": "success", "clients": [{"id": i, "name": "n" * 50} for i in range(3000)]}
    server.default = Reply(body=big)
    hook = SalebotHook()
    assert hook.get_clients(limit=500) == big
    hook.get_messages()
    assert server.connections == 1


def test_a_5xx_with_wrong_action_is_in_doubt_not_a_permission_refusal(
    hook: SalebotHook, requests_mock: rm.Mocker
) -> None:
    requests_mock.post(url("message"), status_code=500, json={"status": "error", "message": "WRONG_ACTION"})
    with pytest.raises(SalebotAPIError) as info:
        hook.message(1, message="hi")
    assert type(info.value) is SalebotAPIError
    assert info.value.in_doubt is True
    assert requests_mock.call_count == 1


@pytest.mark.parametrize("reply", [[1, 2], "text", 5])
def test_helpers_on_a_reply_of_the_wrong_shape_raise_a_typed_error(
    hook: SalebotHook, requests_mock: rm.Mocker, reply: object
) -> None:
    for action in ("get_history", "get_clients", "get_current_order_id"):
        requests_mock.get(url(action), json=reply)
    with pytest.raises(SalebotAPIError, match="get_history replied with a JSON"):
        list(hook.iter_history(1))
    with pytest.raises(SalebotAPIError, match="get_history replied with a JSON"):
        list(hook.iter_history(1, "01.01.2024", "02.01.2024"))
    with pytest.raises(SalebotAPIError, match="get_clients replied with a JSON"):
        list(hook.iter_clients())
    with pytest.raises(SalebotAPIError, match="get_current_order_id replied with a JSON"):
        hook.set_order_vars(1, {"a": 1})


def test_history_result_that_is_not_a_list_is_a_typed_error(
    hook: SalebotHook, requests_mock: rm.Mocker
) -> None:
    requests_mock.get(url("get_history"), json={"status": "success", "result": {"a": 1}})
    with pytest.raises(SalebotAPIError, match="'result' that is not a list"):
        list(hook.iter_history(1))


# ------------------------------------------------------------------------------------- the key


def test_a_key_pasted_with_a_newline_is_trimmed(
    requests_mock: rm.Mocker, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn = {"conn_type": "salebot", "host": "http://salebot.test", "password": f" {API_KEY}\n"}
    monkeypatch.setenv("AIRFLOW_CONN_SALEBOT_DEFAULT", json.dumps(conn))
    requests_mock.get(url("get_messages"), json={"status": "success"})
    SalebotHook().get_messages()
    assert requests_mock.last_request.url == url("get_messages")


def test_a_key_echoed_by_the_server_in_any_form_is_hidden(
    hook: SalebotHook, requests_mock: rm.Mocker
) -> None:
    echoed = f"{API_KEY} {json.dumps(API_KEY)} /api/x/{API_KEY}"
    requests_mock.get(url("get_variables"), status_code=400, json={"status": echoed, "message": echoed})
    with pytest.raises(SalebotAPIError) as info:
        hook.get_variables(1)
    for text in (str(info.value), repr(vars(info.value))):
        assert API_KEY not in text


def test_a_short_key_is_refused_when_the_connection_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    conn = {"conn_type": "salebot", "host": "http://salebot.test", "password": "abc12"}
    monkeypatch.setenv("AIRFLOW_CONN_SALEBOT_DEFAULT", json.dumps(conn))
    ok, message = SalebotHook().test_connection()
    assert ok is False
    assert "cannot be hidden safely" in message
    assert "abc12" not in message
    with pytest.raises(SalebotValidationError, match="cannot be hidden safely"):
        SalebotHook().get_messages()


def test_http_off_loopback_warns_once_that_the_key_travels_in_clear(
    salebot_conn: Any, requests_mock: rm.Mocker, capfd: pytest.CaptureFixture[str]
) -> None:
    requests_mock.get(url("get_messages"), json={"status": "success"})
    hook = SalebotHook()
    hook.get_messages()
    hook.get_messages()
    printed = "".join(capfd.readouterr())
    assert printed.count("travels in clear text") == 1
    assert API_KEY not in printed


def test_loopback_http_does_not_warn(server: ScriptedServer, capfd: pytest.CaptureFixture[str]) -> None:
    SalebotHook().get_messages()
    assert "clear text" not in "".join(capfd.readouterr())


# ------------------------------------------------------------------------------------- input


def test_chunk_size_and_window_days_are_not_booleans(hook: SalebotHook) -> None:
    with pytest.raises(SalebotValidationError, match="'chunk_size' must be"):
        hook.iter_chunked("add_to_list", [1], chunk_size=True, list_id=1)
    with pytest.raises(SalebotValidationError, match="'window_days' must be"):
        hook.iter_history(1, "01.01.2024", "02.01.2024", window_days=True)


def test_a_bad_item_of_a_lazy_iterable_is_named_by_its_place_in_the_whole_input(
    hook: SalebotHook, requests_mock: rm.Mocker
) -> None:
    requests_mock.post(url("add_to_list"), json={"status": "success"})
    items = (x for x in [1, 2, 3, 4, 5, "six", 7])
    with pytest.raises(SalebotValidationError, match=r"'clients\[5\]' must be an integer id") as info:
        list(hook.iter_chunked("add_to_list", items, chunk_size=3, list_id=1))
    assert requests_mock.call_count == 1
    assert info.value.items_done == 3


def test_broadcast_drops_a_repeated_client(hook: SalebotHook, requests_mock: rm.Mocker) -> None:
    requests_mock.post(url("broadcast"), json={"status": "success"})
    hook.broadcast(clients=[5, 6, 5, "6"], message="sale")
    assert requests_mock.last_request.json()["clients"] == [5, 6]


def test_hook_errors_name_the_python_and_api_names(hook: SalebotHook, requests_mock: rm.Mocker) -> None:
    with pytest.raises(SalebotValidationError, match=r"'list \(list_id\)' must be an integer id"):
        hook.broadcast(list_id="five", message="x")
    with pytest.raises(SalebotValidationError, match=r"'list \(list_id\)' must be an integer id"):
        hook.get_clients(list_id=1.5)  # type: ignore[arg-type]
    assert requests_mock.call_count == 0


# ------------------------------------------------------------------------------------- connection mistakes


def test_a_base_url_with_an_empty_fragment_is_refused(salebot_conn: Any, requests_mock: rm.Mocker) -> None:
    salebot_conn("https://chatter.salebot.pro#")
    with pytest.raises(SalebotValidationError, match="fragment"):
        SalebotHook().get_messages()
    assert requests_mock.call_count == 0


def test_a_missing_ca_bundle_from_the_environment_is_a_clear_error(
    server: ScriptedServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tmp_path / "nope.pem"))
    with pytest.raises(SalebotValidationError, match=r"CA bundle .* does not exist"):
        SalebotHook().get_messages()
    assert server.seen == []


@pytest.mark.parametrize(
    "proxy", ["http://:3128", "http://[bad", "ftp://proxy.test:21", "http://proxy.test:port"]
)
def test_a_malformed_proxy_is_a_configuration_error_not_retried(
    server: ScriptedServer, monkeypatch: pytest.MonkeyPatch, proxy: str
) -> None:
    monkeypatch.setenv("HTTP_PROXY", proxy)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    sleeps: list[float] = []
    monkeypatch.setattr("time.sleep", sleeps.append)
    with pytest.raises(SalebotValidationError, match=r"proxy setting for http .* is malformed"):
        SalebotHook().get_messages()
    assert sleeps == []
    assert server.seen == []


def test_threads_making_the_first_calls_together_share_one_session_and_limiter(
    server: ScriptedServer, salebot_conn: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    salebot_conn(server.base_url, rate_limit=1000)
    made: list[requests.Session] = []
    real = hook_module.Session

    def slow_session() -> requests.Session:
        time.sleep(0.05)  # widen the window in which a lock-free lazy attribute is built twice
        session = real()
        made.append(session)
        return session

    monkeypatch.setattr(hook_module, "Session", slow_session)
    hook = SalebotHook()
    barrier = threading.Barrier(8)
    seen: list[tuple[int, int]] = []

    def first_call() -> None:
        barrier.wait()
        hook.get_messages()
        seen.append((id(hook.session), id(hook._limiter)))

    threads = [threading.Thread(target=first_call) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(made) == 1
    assert len(set(seen)) == 1
    assert len(seen) == 8
    # On Python 3.11 functools.cached_property still locks, so the race above cannot show there;
    # since 3.12 it does not, so the lazy attributes must not rest on it.
    for name in ("settings", "session", "_limiter", "_backoff"):
        assert not isinstance(SalebotHook.__dict__[name], functools.cached_property), name


# ------------------------------------------------------------------------------------- a user's first hour


def test_test_connection_is_one_short_attempt(
    server: ScriptedServer, salebot_conn: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    salebot_conn(server.base_url, timeout=60, max_retries=5)
    monkeypatch.setattr(hook_module, "TEST_TIMEOUT", 0.3)
    server.default = Reply(delay=1.0)
    ok, message = SalebotHook().test_connection()
    assert ok is False
    assert len(server.seen) == 1
    assert "no whole reply within 0.3s" in message
    assert "may have been processed" not in message


def test_a_reads_timeout_is_not_worded_as_a_send(server: ScriptedServer, salebot_conn: Any) -> None:
    salebot_conn(server.base_url, timeout=0.2, max_retries=0)
    server.script = [Reply(delay=0.6)]
    with pytest.raises(SalebotConnectionError) as info:
        SalebotHook().get_messages()
    assert "may have been processed" not in str(info.value)


@pytest.mark.parametrize(
    "reply",
    [
        Reply(status=502, body="<html>bad gateway</html>"),
        Reply(body="{not json"),
        Reply(reset=True),
    ],
)
def test_an_in_doubt_send_says_so_in_its_text(server: ScriptedServer, reply: Reply) -> None:
    server.script = [reply]
    with pytest.raises(SalebotError) as info:
        SalebotHook().message(1, message="hi")
    assert info.value.in_doubt is True
    assert "may have been processed; not retried so that nobody gets it twice" in str(info.value)


def test_each_send_logs_one_info_line_and_reads_none(
    server: ScriptedServer, capfd: pytest.CaptureFixture[str]
) -> None:
    hook = SalebotHook()
    hook.message(5, message="hi")
    hook.broadcast(clients=[1, 2, 3], message="sale")
    hook.get_messages()
    server.script = [Reply(status=502)]
    with pytest.raises(SalebotAPIError):
        hook.broadcast(list_id=7, message="sale")
    printed = "".join(capfd.readouterr())
    assert printed.count("Salebot message to client 5: done") == 1
    assert printed.count("Salebot broadcast to 3 clients: done") == 1
    assert printed.count("Salebot broadcast to list 7: failed (in doubt, it may have been processed)") == 1
    assert "get_messages to" not in printed


# ------------------------------------------------------------------------------------- fidelity


def test_call_without_validation_sends_exactly_what_is_given(server: ScriptedServer) -> None:
    server.default = Reply(status=502)
    with pytest.raises(SalebotAPIError, match="HTTP 502"):
        SalebotHook().call("message", {"client_id": 1, "message_id": 5}, validate=False)
    assert len(server.seen) == 1  # still a send: not retried after a 5xx
    assert json.loads(server.seen[0].body) == {"client_id": 1, "message_id": 5}
    server.seen.clear()
    server.default = Reply(status=503)
    with pytest.raises(SalebotAPIError):
        SalebotHook().call("get_variables", {"client_id": "x"}, validate=False)
    assert len(server.seen) == 3  # still a read: retried
    assert server.seen[0].query == {"client_id": ["x"]}


def test_call_adds_a_query_string_on_a_post(server: ScriptedServer) -> None:
    SalebotHook().call(
        "message",
        {"client_id": 1, "message": "hi"},
        query={"delimiter": "1", "delimiter_value_client_id": "data 1 id"},
    )
    (seen,) = server.seen
    assert seen.method == "POST"
    assert seen.query == {"delimiter": ["1"], "delimiter_value_client_id": ["data 1 id"]}
    assert json.loads(seen.body) == {"client_id": 1, "message": "hi"}


@pytest.fixture
def current_deal(requests_mock: rm.Mocker) -> Iterator[rm.Mocker]:
    requests_mock.get(url("get_current_order_id"), json={"status": "success", "order_id": 40632})
    for action in ("move_order_to_next_state", "get_order_vars", "set_order_vars"):
        requests_mock.post(url(action), json={"status": "success"})
    return requests_mock


@pytest.mark.parametrize(
    ("method", "args"),
    [
        ("move_order_to_next_state", (7,)),
        ("get_order_vars", (7, ["sum"])),
        ("set_order_vars", (7, {"sum": 1})),
    ],
)
def test_an_omitted_order_id_is_looked_up_and_sent_explicitly(
    hook: SalebotHook, current_deal: rm.Mocker, method: str, args: tuple[Any, ...]
) -> None:
    getattr(hook, method)(*args)
    first, second = current_deal.request_history
    assert first.url.endswith("/get_current_order_id?client_id=7")
    assert second.json()["order_id"] == 40632
    getattr(hook, method)(*args, order_id=5)
    assert current_deal.call_count == 3
    assert current_deal.last_request.json()["order_id"] == 5


def test_a_client_without_a_current_deal_is_not_found(hook: SalebotHook, requests_mock: rm.Mocker) -> None:
    requests_mock.get(url("get_current_order_id"), json={"status": "success", "order_id": None})
    with pytest.raises(SalebotNotFoundError, match="client 7 has no current deal"):
        hook.set_order_vars(7, {"a": 1})
    assert requests_mock.call_count == 1


def test_bad_input_to_an_order_method_is_refused_before_the_lookup(
    hook: SalebotHook, requests_mock: rm.Mocker
) -> None:
    with pytest.raises(SalebotValidationError, match="'variables' must not be empty"):
        hook.set_order_vars(7, {})
    assert requests_mock.call_count == 0


def test_in_doubt_note_is_the_one_the_hook_uses() -> None:
    assert api.IN_DOUBT_NOTE == "It may have been processed; not retried so that nobody gets it twice."


def test_a_ca_bundle_that_holds_no_certificates_names_the_extra(
    server: ScriptedServer, salebot_conn: Any, tmp_path: Any
) -> None:
    bundle = tmp_path / "not-a-ca.pem"
    bundle.write_text("this is not a certificate")
    salebot_conn(server.base_url, verify=str(bundle))
    with pytest.raises(SalebotValidationError, match=r"from the connection's 'verify' extra cannot be used"):
        SalebotHook().get_messages()
    assert server.seen == []


def test_a_tls_failure_is_not_in_doubt(hook: SalebotHook, requests_mock: rm.Mocker) -> None:
    requests_mock.post(url("message"), exc=requests.exceptions.SSLError("certificate verify failed"))
    with pytest.raises(SalebotConnectionError, match="nothing was sent") as info:
        hook.message(1, message="hi")
    assert info.value.in_doubt is False


def test_clients_whose_ids_are_of_an_odd_type_are_still_paged(
    hook: SalebotHook, requests_mock: rm.Mocker
) -> None:
    page = {"status": "success", "clients": [{"id": [1, 2]}, {"id": {"a": 1}}, {"id": 3}]}
    requests_mock.get(url("get_clients"), json=page)
    assert list(hook.iter_clients(page_size=5)) == page["clients"]


@pytest.mark.parametrize("order_id", [[1], {"id": 1}, "12a", True, -5])
def test_a_current_deal_id_that_is_not_an_id_is_an_api_error(
    hook: SalebotHook, requests_mock: rm.Mocker, order_id: object
) -> None:
    requests_mock.get(url("get_current_order_id"), json={"status": "success", "order_id": order_id})
    with pytest.raises(SalebotAPIError, match="order_id that is not an id"):
        hook.set_order_vars(7, {"a": 1})
    assert requests_mock.call_count == 1

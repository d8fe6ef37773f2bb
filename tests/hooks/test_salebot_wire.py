"""SalebotHook over a real socket: keep-alive, timeouts, resets, and the key in no log or traceback."""

from __future__ import annotations

import logging
import socket
import traceback
from typing import TYPE_CHECKING, Any

import pytest

from salebot_provider.exceptions import SalebotAPIError, SalebotConnectionError, SalebotError
from salebot_provider.hooks import SalebotHook
from tests.conftest import API_KEY, Reply, ScriptedServer

if TYPE_CHECKING:
    from collections.abc import Iterator


def test_one_hook_reuses_one_connection(server: ScriptedServer) -> None:
    hook = SalebotHook()
    for i in range(5):
        hook.get_variables(i)
    hook.save_variables(client_id=1, variables={"a": 1})
    assert len(server.seen) == 6
    assert {s.connection for s in server.seen} == {1}
    assert server.connections == 1


def test_send_is_not_retried_after_read_timeout_on_a_socket(
    server: ScriptedServer, salebot_conn: Any
) -> None:
    salebot_conn(server.base_url, timeout=0.2)
    server.script = [Reply(delay=0.6)]
    with pytest.raises(SalebotConnectionError, match="may have been processed") as info:
        SalebotHook().broadcast(list_id=3, message="sale")
    assert info.value.in_doubt is True
    assert [s.action for s in server.seen] == ["broadcast"]


def test_send_is_not_retried_after_a_reset(server: ScriptedServer) -> None:
    server.script = [Reply(reset=True)]
    with pytest.raises(SalebotConnectionError) as info:
        SalebotHook().message(1, message="hi")
    assert info.value.in_doubt is True
    assert len(server.seen) == 1


def test_send_is_not_retried_after_a_cut_short_reply(server: ScriptedServer) -> None:
    server.script = [Reply(body={"status": "success", "padding": "x" * 100}, truncate=True)]
    with pytest.raises(SalebotConnectionError, match="may have been processed") as info:
        SalebotHook().broadcast(list_id=3, message="sale")
    assert info.value.in_doubt is True
    assert len(server.seen) == 1


def test_read_recovers_after_a_reset(server: ScriptedServer) -> None:
    server.script = [Reply(reset=True), Reply(body={"status": "success", "state_id": 4})]
    assert SalebotHook().get_order_state(1) == {"status": "success", "state_id": 4}
    assert len(server.seen) == 2


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_refused_connection_is_not_in_doubt_and_is_retried(
    salebot_conn: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    salebot_conn(f"http://127.0.0.1:{_closed_port()}", max_retries=2)
    attempts = []
    monkeypatch.setattr("time.sleep", attempts.append)
    with pytest.raises(SalebotConnectionError, match="nothing was sent") as info:
        SalebotHook().message(1, message="hi")
    assert info.value.in_doubt is False
    assert len(attempts) == 2


def _failures(server: ScriptedServer, salebot_conn: Any) -> list[SalebotError]:
    """Provoke every kind of failure the hook raises, and collect the errors."""
    errors: list[SalebotError] = []
    page = f"<html>502 at /api/{API_KEY}/message</html>"
    server.script = [
        Reply(status=502, body=page, headers={"Content-Type": "text/html"}),
        Reply(status=403, body={"status": "error", "message": "WRONG_ACTION"}),
        Reply(body={"status": "client_not_found"}),
        Reply(body="{not json"),
        Reply(reset=True),
        Reply(status=429, headers={"Retry-After": "0"}),
        Reply(status=429, headers={"Retry-After": "0"}),
        Reply(status=429, headers={"Retry-After": "0"}),
    ]
    hook = SalebotHook()
    calls = [
        lambda: hook.message(1, message="x"),
        lambda: hook.delete_clients([1]),
        lambda: hook.get_current_order_id(1),
        lambda: hook.create_order(client_id=1),
        lambda: hook.broadcast(list_id=1, message="x"),
        lambda: hook.callback(client_id=1, message="x"),
    ]
    for call in calls:
        with pytest.raises(SalebotError) as info:
            call()
        errors.append(info.value)
    salebot_conn(f"http://127.0.0.1:{_closed_port()}", max_retries=0)
    with pytest.raises(SalebotConnectionError) as refused:
        SalebotHook().get_messages()
    errors.append(refused.value)
    salebot_conn(f"http://127.0.0.1:{_closed_port()}/api/{API_KEY}")
    with pytest.raises(SalebotError) as bad_host:
        SalebotHook().get_messages()
    errors.append(bad_host.value)
    return errors


@pytest.fixture
def every_logger_at_debug() -> Iterator[None]:
    """DEBUG on for every logger there is (urllib3's and requests' included), restored afterwards."""
    import urllib3  # noqa: F401  (so that its loggers exist before the levels are set)

    loggers = [logging.getLogger(name) for name in ["", *logging.root.manager.loggerDict]]
    saved = [(logger.level, logger.disabled) for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.DEBUG)
        logger.disabled = False
    yield
    for logger, (level, disabled) in zip(loggers, saved, strict=True):
        logger.setLevel(level)
        logger.disabled = disabled


@pytest.mark.usefixtures("every_logger_at_debug")
def test_key_is_in_no_log_record_and_no_error(
    server: ScriptedServer,
    salebot_conn: Any,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    SalebotHook().get_variables(1)
    errors = _failures(server, salebot_conn)

    assert any("connectionpool" in r.name for r in caplog.records), "urllib3 DEBUG lines were captured"
    assert any("/api/***/" in r.getMessage() for r in caplog.records)
    for record in caplog.records:
        assert API_KEY not in record.getMessage(), record.name
        assert API_KEY not in str(record.args)
    assert API_KEY not in caplog.text
    printed = "".join(capfd.readouterr())  # the hook's own (structlog) lines go to the console
    assert "retrying in" in printed
    assert API_KEY not in printed
    assert {type(e).__name__ for e in errors} >= {
        "SalebotAPIError",
        "SalebotPermissionError",
        "SalebotNotFoundError",
        "SalebotConnectionError",
        "SalebotValidationError",
    }
    for error in errors:
        rendered = "".join(traceback.format_exception(type(error), error, error.__traceback__))
        for text in (str(error), repr(error), rendered, str(vars(error))):
            assert API_KEY not in text
        chained = error.__context__ or error.__cause__
        assert chained is None or API_KEY not in repr(chained)


def test_html_error_page_reports_an_excerpt(server: ScriptedServer) -> None:
    server.script = [
        Reply(
            status=503,
            body="<html><h1>Service Unavailable</h1></html>",
            headers={"Content-Type": "text/html"},
        )
    ]
    with pytest.raises(SalebotAPIError, match="Service Unavailable") as info:
        SalebotHook().message(1, message="x")
    assert info.value.http_status == 503


def test_proxy_from_the_environment_is_used(
    server: ScriptedServer, salebot_conn: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    salebot_conn("http://salebot.invalid")
    monkeypatch.setenv("HTTP_PROXY", server.base_url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    hook = SalebotHook()
    hook.get_messages()
    hook.get_messages()
    assert [s.action for s in server.seen] == ["get_messages", "get_messages"]


def test_no_proxy_is_honoured(server: ScriptedServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    assert SalebotHook().get_messages() == {"status": "success"}

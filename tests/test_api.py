"""The action table, request building and reply judging: pure functions, no sockets."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pendulum
import pytest

from salebot_provider import api
from salebot_provider.exceptions import (
    SalebotAPIError,
    SalebotConnectionError,
    SalebotError,
    SalebotNotFoundError,
    SalebotPermissionError,
    SalebotValidationError,
)
from tests.samples import CATALOG_ACTIONS, CATALOG_METHODS, CATALOG_PERMISSIONS

KEY = "5f3c1a9be07d4c2e8f6a0b1c2d3e4f5a6b7c"


def test_table_has_exactly_the_41_catalog_actions() -> None:
    assert len(CATALOG_ACTIONS) == 41
    assert sorted(api.ACTIONS) == sorted(CATALOG_ACTIONS)


@pytest.mark.parametrize("name", CATALOG_ACTIONS)
def test_table_method_and_permission_are_the_vendors(name: str) -> None:
    action = api.ACTIONS[name]
    assert action.method == CATALOG_METHODS.get(name, "POST")
    assert action.permission == CATALOG_PERMISSIONS[name]
    assert action.permission in api.PERMISSIONS


def test_reads_are_idempotent_and_messages_are_not() -> None:
    sends = {
        "message",
        "broadcast",
        "callback",
        "load_clients",
        "create_order",
        "add_to_list",
        "delete_clients",
    }
    assert not any(api.ACTIONS[n].idempotent for n in sends)
    assert all(
        api.ACTIONS[n].idempotent
        for n in ("get_clients", "find_clients", "get_order_vars", "get_order_state")
    )


def test_exception_hierarchy() -> None:
    from airflow.providers.common.compat.sdk import AirflowException

    assert issubclass(SalebotError, AirflowException)
    assert issubclass(SalebotPermissionError, SalebotAPIError)
    assert issubclass(SalebotNotFoundError, SalebotAPIError)
    assert issubclass(SalebotAPIError, SalebotError)
    assert issubclass(SalebotConnectionError, SalebotError)
    assert issubclass(SalebotValidationError, SalebotError)
    assert issubclass(SalebotValidationError, ValueError)


# ------------------------------------------------------------------------------------- requests


def test_get_puts_parameters_in_the_query_string() -> None:
    request = api.build_request("get_clients", {"offset": 0, "limit": 500, "list": 7, "reverse": None})
    assert request.method == "GET"
    assert request.query == {"offset": "0", "limit": "500", "list": "7"}
    assert request.body is None


def test_post_sends_a_json_body() -> None:
    request = api.build_request("message", {"client_id": 1, "message": "Привет"})
    assert request.method == "POST"
    assert json.loads(request.body or b"") == {"client_id": 1, "message": "Привет"}


def test_load_clients_body_is_a_top_level_array() -> None:
    item = {
        "platform_id": "79538550785@s.whatsapp.net",
        "group_id": "1hwF7lwEjv4SKYIGFhQnBw==",
        "client_type": 6,
    }
    request = api.build_request("load_clients", {"clients": [item]})
    assert json.loads(request.body or b"") == [item]


def test_several_vars_become_query_parameters() -> None:
    request = api.build_request("find_all_client_id_by_several_vars", {"variables": {"a": "1", "b": 2}})
    assert request.query == {"a": "1", "b": "2"}


def test_bool_in_query_is_lower_case() -> None:
    assert api.build_request("get_clients", {"reverse": True}).query == {"reverse": "true"}


def test_numpy_like_integers_become_int() -> None:
    class Int64(int):
        pass

    request = api.build_request("delete_clients", {"client_ids": [Int64(5), 6]})
    assert json.loads(request.body or b"") == {"client_ids": [5, 6]}


def test_display_path_hides_the_key_and_url_holds_it() -> None:
    request = api.build_request("get_messages", {})
    assert request.display_path == "/api/***/get_messages"
    assert request.url("http://h", KEY) == f"http://h/api/{KEY}/get_messages"


def test_action_name_cannot_change_the_path() -> None:
    with pytest.raises(SalebotValidationError, match="plain lower-case name"):
        api.encode_request("../admin", "GET", {})


def test_unknown_parameter_is_refused() -> None:
    with pytest.raises(SalebotValidationError, match=r"unknown parameter.*colour"):
        api.validate("message", {"client_id": 1, "message": "x", "colour": "red"})


# ------------------------------------------------------------------------------------- send_time


def test_send_time_string_is_checked_and_sent_as_is() -> None:
    assert api.to_send_time("2024-10-16 13:15:59", "Europe/Moscow") == "2024-10-16 13:15:59"
    with pytest.raises(SalebotValidationError, match="send_time"):
        api.validate("message", {"client_id": 1, "message": "x", "send_time": "16.10.2024 13:15"})


def test_aware_send_time_is_converted_to_the_connection_zone() -> None:
    utc = dt.datetime(2024, 10, 16, 10, 15, 59, tzinfo=dt.timezone.utc)
    assert api.to_send_time(utc, "Europe/Moscow") == "2024-10-16 13:15:59"
    assert (
        api.to_send_time(pendulum.datetime(2024, 10, 16, 10, 15, 59), "Asia/Yekaterinburg")
        == "2024-10-16 15:15:59"
    )


def test_naive_send_time_is_taken_as_already_in_the_zone() -> None:
    assert (
        api.to_send_time(dt.datetime(2024, 10, 16, 13, 15, 59), "Asia/Vladivostok") == "2024-10-16 13:15:59"
    )


def test_build_request_renders_send_time_in_the_given_zone() -> None:
    utc = dt.datetime(2024, 1, 1, 9, 0, tzinfo=dt.timezone.utc)
    request = api.build_request(
        "message", {"client_id": 1, "message": "x", "send_time": utc}, timezone="Asia/Omsk"
    )
    assert json.loads(request.body or b"")["send_time"] == "2024-01-01 15:00:00"


# ------------------------------------------------------------------------------------- replies


def test_success_reply_is_returned_unchanged() -> None:
    body = {"status": "success", "clients": [{"id": 1}]}
    assert api.parse_reply("get_clients", 200, json.dumps(body).encode()) == body


def test_bare_list_reply_is_a_success() -> None:
    assert api.parse_reply("find_client_id_by_platform_id", 200, b'[{"id": 1}]') == [{"id": 1}]


@pytest.mark.parametrize(
    ("status", "body", "error", "in_doubt"),
    [
        (200, b'{"status": "fail", "message": "Error in parameter format"}', SalebotAPIError, False),
        (200, b'{"status": "error", "message": "bad"}', SalebotAPIError, False),
        (200, b'{"status": "client_not_found"}', SalebotNotFoundError, False),
        (200, b'{"status": "order not found"}', SalebotNotFoundError, False),
        (200, b'{"status": "order 12345 not found"}', SalebotNotFoundError, False),
        (404, b"Not Found", SalebotNotFoundError, False),
        (403, b'{"status": "error", "message": "WRONG_ACTION"}', SalebotPermissionError, False),
        (400, b"WRONG_ACTION", SalebotPermissionError, False),
        (401, b"unauthorized", SalebotPermissionError, False),
        (500, b'{"status": "error"}', SalebotAPIError, True),
        (502, b"<html><body>502 Bad Gateway</body></html>", SalebotAPIError, True),
        (200, b"<html><body>Error</body></html>", SalebotAPIError, True),
        (200, b'{"status": "success"', SalebotAPIError, True),
        (200, b"", SalebotAPIError, True),
        (429, b"slow down", SalebotAPIError, False),
    ],
)
def test_failures_raise_the_right_error(status: int, body: bytes, error: type, in_doubt: bool) -> None:
    with pytest.raises(error) as info:
        api.parse_reply("get_variables", status, body, secret=KEY)
    assert type(info.value) is error
    assert info.value.in_doubt is in_doubt
    assert info.value.http_status == status
    assert "get_variables" in str(info.value)
    assert f"HTTP {status}" in str(info.value)


def test_api_status_and_message_are_kept() -> None:
    with pytest.raises(SalebotAPIError) as info:
        api.parse_reply("find_clients", 200, b'{"status": "fail", "message": "Parameter \\"q\\" required"}')
    assert info.value.api_status == "fail"
    assert info.value.api_message == 'Parameter "q" required'
    assert "Parameter" in str(info.value)


def test_permission_error_names_the_permission_in_english_and_russian() -> None:
    with pytest.raises(SalebotPermissionError) as info:
        api.parse_reply("delete_clients", 403, b'{"message": "WRONG_ACTION"}')
    text = str(info.value)
    assert "clients_delete" in text
    assert "delete clients" in text
    assert "Разрешение на удаление клиентов" in text


def test_excerpt_never_holds_the_key() -> None:
    page = f"<html>Error at https://chatter.salebot.pro/api/{KEY}/message please retry</html>".encode()
    with pytest.raises(SalebotAPIError) as info:
        api.parse_reply("message", 502, page, secret=KEY)
    assert KEY not in str(info.value)
    assert KEY not in info.value.excerpt
    assert "/api/***/message" in info.value.excerpt


def test_excerpt_hides_a_key_that_straddles_the_cut() -> None:
    for pad in range(170, 200):
        body = ("x" * pad + f"/api/{KEY}/message").encode()
        with pytest.raises(SalebotAPIError) as info:
            api.parse_reply("message", 500, body, secret=KEY)
        assert KEY[:6] not in str(info.value), pad


def test_a_key_in_the_status_field_is_hidden() -> None:
    with pytest.raises(SalebotAPIError) as info:
        api.parse_reply("message", 200, json.dumps({"status": f"bad key {KEY}"}).encode(), secret=KEY)
    assert KEY not in str(info.value)
    assert KEY not in (info.value.api_status or "")


def test_a_bare_404_hints_at_the_host() -> None:
    with pytest.raises(SalebotNotFoundError, match="check the connection's host"):
        api.parse_reply("get_clients", 404, b"<html>Not Found</html>")
    with pytest.raises(SalebotNotFoundError) as info:
        api.parse_reply("get_current_order_id", 200, b'{"status": "client_not_found"}')
    assert "host" not in str(info.value)


@pytest.mark.parametrize(
    ("action", "params", "name"),
    [
        ("message", {"client_id": 1, "message": "x", "send_time": "2024-1-5 1:2:3"}, "send_time"),
        ("get_history", {"client_id": 1, "start_date": "1.2.2024", "stop_date": "02.02.2024"}, "start_date"),
        ("find_all_client_id_by_several_vars", {"variables": {"a": None}}, "no value for 'a'"),
        ("find_all_client_id_by_several_vars", {"variables": {"a": [1]}}, "must be a string or a number"),
    ],
)
def test_loose_values_are_refused(action: str, params: dict[str, object], name: str) -> None:
    with pytest.raises(SalebotValidationError, match=name):
        api.validate(action, params)


def test_nested_values_in_a_query_are_json() -> None:
    request = api.build_request(
        "callback", {"client_id": 1, "message": "x"}, method="GET", extra={"cart": [1, 2]}
    )
    assert request.query == {"client_id": "1", "message": "x", "cart": "[1, 2]"}


def test_retry_after_is_read_from_seconds_and_from_a_date() -> None:
    with pytest.raises(SalebotAPIError) as info:
        api.parse_reply("message", 429, b"", retry_after="7")
    assert info.value.retry_after == 7.0
    later = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=120)).strftime(
        "%a, %d %b %Y %H:%M:%S GMT"
    )
    with pytest.raises(SalebotAPIError) as info:
        api.parse_reply("message", 429, b"", retry_after=later)
    assert 100 < (info.value.retry_after or 0) <= 120


# ------------------------------------------------------------------------------------- retry policy


def _api_error(status: int) -> SalebotAPIError:
    with pytest.raises(SalebotAPIError) as info:
        api.parse_reply("x", status, b"")
    return info.value


@pytest.mark.parametrize(
    ("action", "error", "retried"),
    [
        ("get_clients", SalebotConnectionError("reset", in_doubt=True), True),
        ("get_clients", _api_error(503), True),
        ("get_clients", _api_error(429), True),
        ("get_clients", _api_error(400), False),
        ("get_clients", _api_error(404), False),
        ("get_clients", _api_error(403), False),
        ("message", SalebotConnectionError("refused", in_doubt=False), True),
        ("message", SalebotConnectionError("read timeout", in_doubt=True), False),
        ("message", _api_error(502), False),
        ("message", _api_error(503), False),
        ("message", _api_error(429), True),
        ("broadcast", _api_error(500), False),
        ("save_variables", _api_error(502), True),
    ],
)
def test_retry_policy(action: str, error: SalebotError, retried: bool) -> None:
    assert api.is_retryable(api.ACTIONS[action], error) is retried


def test_unknown_action_is_treated_as_a_send() -> None:
    assert api.is_retryable(None, _api_error(503)) is False
    assert api.is_retryable(None, _api_error(429)) is True


# ------------------------------------------------------------------------------------- connection


def test_connection_defaults() -> None:
    s = api.settings_from_connection(host=None, password=KEY, extra={})
    assert s.base_url == "https://chatter.salebot.pro"
    assert (s.timeout, s.max_retries, s.backoff_factor, s.rate_limit, s.verify, s.timezone) == (
        30.0,
        3,
        1.0,
        None,
        True,
        "Europe/Moscow",
    )
    assert KEY not in repr(s)


@pytest.mark.parametrize(
    ("host", "port", "schema", "expected"),
    [
        ("http://127.0.0.1:8080", None, None, "http://127.0.0.1:8080"),
        ("http://127.0.0.1", 8080, None, "http://127.0.0.1:8080"),
        ("chatter.salebot.ai", None, None, "https://chatter.salebot.ai"),
        ("127.0.0.1", 9000, "http", "http://127.0.0.1:9000"),
        ("https://chatter.salebot.pro/", None, None, "https://chatter.salebot.pro"),
    ],
)
def test_base_url_forms(host: str, port: int | None, schema: str | None, expected: str) -> None:
    assert api.base_url_of(host, port, schema) == expected


def test_key_pasted_into_host_is_refused_without_showing_it() -> None:
    with pytest.raises(SalebotValidationError, match="password") as info:
        api.base_url_of(f"https://chatter.salebot.pro/api/{KEY}")
    assert KEY not in str(info.value)


def test_missing_key_is_refused() -> None:
    with pytest.raises(SalebotValidationError, match="no API key"):
        api.settings_from_connection(host=None, password="", extra={})


@pytest.mark.parametrize(
    ("extra", "name"),
    [
        ({"timeout": "soon"}, "timeout"),
        ({"timeout": 0}, "timeout"),
        ({"max_retries": -1}, "max_retries"),
        ({"max_retries": "2.5"}, "max_retries"),
        ({"backoff_factor": "x"}, "backoff_factor"),
        ({"rate_limit": -3}, "rate_limit"),
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"verify": 3}, "verify"),
    ],
)
def test_bad_extras_are_named(extra: dict[str, object], name: str) -> None:
    with pytest.raises(SalebotValidationError, match=name):
        api.settings_from_connection(host=None, password=KEY, extra=extra)


def test_extras_from_a_form_are_strings_and_may_be_prefixed() -> None:
    s = api.settings_from_connection(
        host=None,
        password=KEY,
        extra={"timeout": "12.5", "extra__salebot__max_retries": "5", "rate_limit": "2", "verify": "false"},
    )
    assert (s.timeout, s.max_retries, s.rate_limit, s.verify) == (12.5, 5, 2.0, False)


# ------------------------------------------------------------------------------------- helpers & docs


def test_batched_is_lazy_and_keeps_the_remainder() -> None:
    consumed = []

    def numbers():  # type: ignore[no-untyped-def]
        for i in range(7):
            consumed.append(i)
            yield i

    chunks = api.batched(numbers(), 3)
    assert next(chunks) == [0, 1, 2]
    assert consumed == [0, 1, 2]
    assert list(chunks) == [[3, 4, 5], [6]]


def test_docs_carry_the_coverage_table_generated_from_the_table() -> None:
    doc = (Path(__file__).parent.parent / "docs" / "hook.md").read_text(encoding="utf-8")
    assert api.coverage_table() in doc

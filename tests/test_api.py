"""The action table, request building and reply judging: pure functions, no sockets."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import certifi
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
        ({"max_retries": 1e400}, "max_retries"),
        ({"timeout": 10**400}, "timeout"),
        ({"timeout": "1e400"}, "timeout"),
        ({"max_retries": "٣"}, "max_retries"),
        ({"max_retries": 2.7}, "max_retries"),
        ({"max_retries": True}, "max_retries"),
        ({"max_retries": 10**6}, "max_retries"),
        ({"timeout": float("nan")}, "timeout"),
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


# ------------------------------------------------------------------------------------- hostile replies


def test_a_redirect_is_a_failure_naming_the_status_never_the_location() -> None:
    with pytest.raises(SalebotAPIError, match="HTTP 302: a redirect, which is never followed") as info:
        api.parse_reply("get_variables", 302, b"", secret=KEY)
    assert info.value.http_status == 302
    assert "Location" not in str(info.value)
    for action in ("get_variables", "message"):
        assert api.is_retryable(api.ACTIONS[action], info.value) is False


@pytest.mark.parametrize("body", [b"[" * 100_000, b'{"a": ' * 50_000, b"\xff\xfe{", b'{"status": "succ'])
def test_a_body_that_breaks_the_decoder_is_a_typed_error(body: bytes) -> None:
    with pytest.raises(SalebotAPIError, match="not JSON") as send:
        api.parse_reply("message", 200, body)
    assert send.value.in_doubt is True
    assert api.IN_DOUBT_NOTE in str(send.value)
    assert api.is_retryable(api.ACTIONS["message"], send.value) is False
    with pytest.raises(SalebotAPIError) as read:
        api.parse_reply("get_variables", 200, body)
    assert api.is_retryable(api.ACTIONS["get_variables"], read.value) is True
    assert api.IN_DOUBT_NOTE not in str(read.value)


@pytest.mark.parametrize("zone", ["", " -0000", " GMT", " +0000"])
def test_retry_after_dates_without_a_zone_or_with_minus_zero_are_utc(zone: str) -> None:
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=120)
    value = later.strftime("%a, %d %b %Y %H:%M:%S") + zone
    assert 100 < (api.parse_retry_after(value) or 0) <= 120


@pytest.mark.parametrize("value", ["soon", "nan", "inf", "Mon, 99 Foo 2024", "-5"])
def test_unreadable_or_odd_retry_after_never_raises(value: str) -> None:
    wait = api.parse_retry_after(value)
    assert wait is None or wait == 0.0


def test_header_text_in_a_message_is_bounded_and_redacted() -> None:
    header = f"/api/{KEY}/x " + "9" * 5000
    with pytest.raises(SalebotAPIError) as info:
        api.parse_reply("message", 429, b"", retry_after=header, secret=KEY)
    text = str(info.value)
    assert KEY not in text
    assert "9" * (api.MAX_HEADER_TEXT + 1) not in text
    assert len(text) < 400


def test_a_5xx_is_in_doubt_whatever_its_body_says() -> None:
    body = b'{"status": "error", "message": "WRONG_ACTION"}'
    with pytest.raises(SalebotAPIError) as info:
        api.parse_reply("message", 500, body)
    assert type(info.value) is SalebotAPIError
    assert info.value.in_doubt is True
    with pytest.raises(SalebotAPIError) as not_found:
        api.parse_reply("get_variables", 503, b'{"status": "client_not_found"}')
    assert type(not_found.value) is SalebotAPIError
    assert api.is_retryable(api.ACTIONS["get_variables"], not_found.value)


@pytest.mark.parametrize("reply", [[1, 2], "text", 5, None])
def test_reply_field_on_a_reply_of_the_wrong_shape_is_a_typed_error(reply: object) -> None:
    with pytest.raises(SalebotAPIError, match="where an object with 'result' was expected"):
        api.reply_field("get_history", reply, "result")


# ------------------------------------------------------------------------------------- the key


@pytest.mark.parametrize(
    "echoed",
    [
        "ab/cd+ef gh\"ij'kl",
        "ab%2Fcd%2Bef%20gh%22ij%27kl",
        "ab/cd%2Bef%20gh%22ij%27kl",
        "ab%2Fcd%2Bef+gh%22ij%27kl",
        "ab/cd+ef gh\\\"ij'kl",
        "ab\\/cd+ef gh\\\"ij'kl",
    ],
)
def test_redaction_covers_the_key_as_sent_and_as_echoed(echoed: str) -> None:
    key = "ab/cd+ef gh\"ij'kl"
    assert api.redact(f"before {echoed} after", key) == "before *** after"


def test_a_key_pasted_with_white_space_is_trimmed() -> None:
    settings = api.settings_from_connection(host=None, password=f"  {KEY}\n", extra={})
    assert settings.api_key == KEY


@pytest.mark.parametrize("key", ["abc", " abcd \n", "1234567"])
def test_a_key_too_short_to_hide_is_refused_saying_why(key: str) -> None:
    with pytest.raises(SalebotValidationError, match="cannot be hidden safely") as info:
        api.settings_from_connection(host=None, password=key, extra={})
    assert key.strip() not in str(info.value)


def test_classification_is_judged_before_redaction() -> None:
    # A key that happens to spell a status must not turn "not found" into a generic failure.
    for key, status in (
        ("client_not_found", "client_not_found"),
        ("order 12 not found", "order 12 not found"),
    ):
        body = json.dumps({"status": status}).encode()
        with pytest.raises(SalebotNotFoundError) as info:
            api.parse_reply("get_variables", 200, body, secret=key)
        assert key not in str(info.value)


@pytest.mark.parametrize(
    ("url", "clear"),
    [
        ("http://salebot.example.com", True),
        ("http://10.0.0.5:8080", True),
        ("http://127.0.0.1:8799", False),
        ("http://127.8.9.1", False),
        ("http://localhost:8799", False),
        ("http://[::1]:8799", False),
        ("https://chatter.salebot.pro", False),
    ],
)
def test_key_travels_in_clear_only_over_http_off_loopback(url: str, clear: bool) -> None:
    assert api.key_travels_in_clear(url) is clear


# ------------------------------------------------------------------------------------- input


@pytest.mark.parametrize("value", ["49177759\n", "٤٩١٧", "４９１７", " 49", "49 ", "+49", "4_9"])
def test_ids_as_strings_are_ascii_digits_only(value: str) -> None:
    with pytest.raises(SalebotValidationError, match="'client_id' must be an integer id"):
        api.validate("get_variables", {"client_id": value})


@pytest.mark.parametrize(
    ("action", "params", "name"),
    [
        (
            "get_history",
            {"client_id": 1, "start_date": "01.01.2024\n", "stop_date": "02.01.2024"},
            "start_date",
        ),
        (
            "get_history",
            {"client_id": 1, "start_date": "٠١.٠١.٢٠٢٤", "stop_date": "02.01.2024"},
            "start_date",
        ),
        ("message", {"client_id": 1, "message": "x", "send_time": "2024-10-16 13:15:59\n"}, "send_time"),
    ],
)
def test_dates_are_ascii_and_whole(action: str, params: dict[str, object], name: str) -> None:
    with pytest.raises(SalebotValidationError, match=f"'{name}' must be a"):
        api.validate(action, params)


@pytest.mark.parametrize(
    ("action", "params", "name"),
    [
        ("message", {"client_id": 1, "message": "x", "time_shift": float("nan")}, "time_shift"),
        ("message", {"client_id": 1, "message": "x", "time_shift": float("inf")}, "time_shift"),
        ("message", {"client_id": 1, "message": "x", "time_shift": 10**400}, "time_shift"),
        ("broadcast", {"list_id": 1, "message": "x", "shift": float("-inf")}, "shift"),
        ("create_order", {"client_id": 1, "budget": 10**400}, "budget"),
        ("save_variables", {"client_id": 1, "variables": {"a": float("nan")}}, "variables\\['a'\\]"),
        (
            "save_variables",
            {"client_id": 1, "variables": {"a": {"b": [1, float("inf")]}}},
            "variables\\['a'\\]",
        ),
        ("save_variables", {"client_id": 1, "variables": {"a": 10**400}}, "variables\\['a'\\]"),
        ("find_client_id_by_var", {"var": "a", "val": float("nan")}, "val"),
        ("set_order_vars", {"client_id": 1, "order_id": 2, "variables": {"sum": float("inf")}}, "variables"),
        ("find_clients", {"q": {"age": {"_in": [float("nan")]}}}, "q"),
        ("get_variables", {"client_id": 10**30}, "client_id"),
    ],
)
def test_nan_infinity_and_huge_numbers_are_refused_naming_the_parameter(
    action: str, params: dict[str, object], name: str
) -> None:
    with pytest.raises(SalebotValidationError, match=f"'{name}"):
        api.validate(action, params)


def test_nan_in_an_extra_field_or_a_query_is_refused() -> None:
    with pytest.raises(SalebotValidationError, match="extra\\['score'\\]"):
        api.validate("callback", {"client_id": 1}, {"score": float("nan")})
    with pytest.raises(SalebotValidationError, match="query\\['x'\\]"):
        api.encode_request("message", "POST", {}, query={"x": float("inf")})


@pytest.mark.parametrize(
    ("action", "params", "name"),
    [
        ("message", {"client_id": 1, "message": ""}, "message"),
        ("message", {"client_id": 1, "message": "  \n"}, "message"),
        ("send_callback_by_platform_id", {"platform_ids": [1], "callback_text": ""}, "callback_text"),
        ("find_client_id_by_var", {"var": "", "val": "x"}, "var"),
        ("find_client_id_by_email", {"email": ""}, "email"),
        ("email_callback", {"email": " "}, "email"),
        ("callback", {"client_id": 1, "message": ""}, "message"),
    ],
)
def test_required_text_may_not_be_empty(action: str, params: dict[str, object], name: str) -> None:
    with pytest.raises(SalebotValidationError, match=f"'{name}' must not be empty"):
        api.validate(action, params)


@pytest.mark.parametrize(
    ("action", "params", "name"),
    [
        ("get_clients", {"limit": True}, "limit"),
        ("get_clients", {"offset": False}, "offset"),
        ("get_variables", {"client_id": True}, "client_id"),
        ("broadcast", {"platform_ids": [1], "group_id": True, "message": "x"}, "group_id"),
        ("add_to_list", {"list_id": 1, "clients": [True]}, "clients\\[0\\]"),
        ("load_clients", {"clients": [{"platform_id": 1, "group_id": True, "client_type": 1}]}, "group_id"),
        (
            "load_clients",
            {"clients": [{"platform_id": 1, "group_id": "b", "client_type": False}]},
            "client_type",
        ),
    ],
)
def test_true_and_false_are_not_ids_or_counts(action: str, params: dict[str, object], name: str) -> None:
    with pytest.raises(SalebotValidationError, match=name):
        api.validate(action, params)


def test_broadcast_never_names_a_recipient_twice() -> None:
    clean = api.validate("broadcast", {"clients": [5, "5", 6, 5, "07", 7], "message": "x"})
    assert clean["clients"] == [5, 6, "07", 7]
    clean = api.validate("broadcast", {"platform_ids": ["a", "b", "a"], "group_id": "bot", "message": "x"})
    assert clean["platform_ids"] == ["a", "b"]
    body = json.loads(api.build_request("broadcast", {"clients": [1, 1, 2], "message": "x"}).body or b"")
    assert body["clients"] == [1, 2]


def test_validate_takes_the_hooks_names_and_messages_name_both() -> None:
    assert api.validate("broadcast", {"list_id": 5, "message": "x"}) == {"list": 5, "message": "x"}
    assert api.validate("get_clients", {"list_id": 5, "list": None}) == {"list": 5}
    with pytest.raises(SalebotValidationError, match="'list \\(list_id\\)' must be an integer id"):
        api.validate("broadcast", {"list_id": "five", "message": "x"})
    with pytest.raises(SalebotValidationError, match="not both"):
        api.validate("broadcast", {"list_id": 5, "list": 5, "message": "x"})
    with pytest.raises(SalebotValidationError, match=r"it takes offset, limit, list \(list_id\), reverse"):
        api.validate("get_clients", {"page": 1})


def test_message_needs_its_text_unless_a_file_is_sent() -> None:
    file = {"attachment_type": "image", "attachment_url": "https://x/a.png"}
    assert api.validate("message", {"client_id": 1, **file})
    assert api.validate("whatsapp_message", {"phone": "7900", "message": "hi", "message_id": 3})
    assert api.validate("broadcast", {"list_id": 1, "message_id": 3})
    for action, who in (("message", {"client_id": 1}), ("whatsapp_message", {"phone": "7900"})):
        with pytest.raises(SalebotValidationError, match="'message' is required unless a file is sent"):
            api.validate(action, {**who, "message_id": 3})


# ------------------------------------------------------------------------------------- connection mistakes


@pytest.mark.parametrize(
    "host",
    [
        "https://chatter.salebot.pro#",
        "https://chatter.salebot.pro#frag",
        "https://chatter.salebot.pro?x=1",
        "https://chatter.salebot.pro/?",
        f"https://chatter.salebot.pro/api/{KEY}",
        "https://chatter.salebot.pro/gw/api",
        "https://user:pw@chatter.salebot.pro",
        "https://chatter.salebot.pro/a b",
        "https://chatter.salebot.pro:99999",
        "https://chatter.salebot.pro:port",
    ],
)
def test_a_base_url_with_anything_but_host_and_path_prefix_is_refused(host: str) -> None:
    with pytest.raises(SalebotValidationError, match="Salebot connection host") as info:
        api.base_url_of(host)
    assert KEY not in str(info.value)


def test_a_base_url_may_carry_a_path_prefix() -> None:
    assert api.base_url_of("https://gw.example.com/salebot/") == "https://gw.example.com/salebot"
    assert api.base_url_of("gw.example.com/salebot", 8443) == "https://gw.example.com:8443/salebot"
    request = api.build_request("get_messages")
    assert (
        request.url("https://gw.example.com/salebot", "k")
        == "https://gw.example.com/salebot/api/k/get_messages"
    )


def test_verify_naming_a_missing_ca_bundle_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    with pytest.raises(SalebotValidationError, match="extra 'verify' names a CA bundle that does not exist"):
        api.settings_from_connection(host=None, password=KEY, extra={"verify": str(missing)})
    bundle = tmp_path / "ca.pem"
    bundle.write_bytes(Path(certifi.where()).read_bytes())  # a real bundle: it is loaded to check it
    settings = api.settings_from_connection(host=None, password=KEY, extra={"verify": f" {bundle} "})
    assert settings.verify == str(bundle)
    with pytest.raises(SalebotValidationError, match="extra 'verify' must be"):
        api.settings_from_connection(host=None, password=KEY, extra={"verify": 3})


def test_a_query_goes_on_a_post_too() -> None:
    request = api.build_request(
        "message", {"client_id": 1, "message": "x"}, query={"value_client_id": "data", "skip": None}
    )
    assert request.method == "POST"
    assert request.query == {"value_client_id": "data"}
    assert json.loads(request.body or b"") == {"client_id": 1, "message": "x"}
    with pytest.raises(SalebotValidationError, match="repeats the parameter"):
        api.build_request("get_variables", {"client_id": 1}, query={"client_id": 2})


def test_audience_names_who_a_send_is_for_without_contact_details() -> None:
    assert api.audience_of({"client_id": 5}) == "client 5"
    assert api.audience_of({"list": 7}) == "list 7"
    assert api.audience_of({"clients": [1, 2, 3]}) == "3 clients"
    assert api.audience_of({"platform_ids": ["a"], "group_id": "b"}) == "1 platform ids"
    assert api.audience_of([{"platform_id": 1}] * 4) == "4 items"
    assert api.audience_of({"phone": "79875146788"}) == "phone ending 6788"
    assert api.audience_of({"email": "ann@example.com"}) == "email at example.com"


def test_an_excerpt_never_shows_part_of_a_key_behind_white_space() -> None:
    body = b" " * 3980 + KEY.encode() + b" tail"
    with pytest.raises(SalebotAPIError) as info:
        api.parse_reply("message", 400, body, secret=KEY)
    text = str(info.value) + info.value.excerpt
    assert KEY[:10] not in text
    assert "*** tail" in info.value.excerpt


def test_a_reply_of_the_wrong_shape_is_not_shown() -> None:
    with pytest.raises(SalebotAPIError) as info:
        api.reply_field("get_history", [f"invalid key {KEY}"], "result")
    assert KEY not in str(info.value)


def test_variable_names_and_keys_may_not_be_blank() -> None:
    with pytest.raises(SalebotValidationError, match=r"'variables\[0\]' must be a variable name"):
        api.validate("get_order_vars", {"client_id": 1, "order_id": 2, "variables": ["  "]})
    with pytest.raises(SalebotValidationError, match="not a non-empty string"):
        api.validate("save_variables", {"client_id": 1, "variables": {" ": 1}})

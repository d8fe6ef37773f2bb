"""The errors the Salebot provider raises, from the widest to the most specific."""

from __future__ import annotations

from typing import Any

from airflow.providers.common.compat.sdk import AirflowException


class SalebotError(AirflowException):
    """
    Base of every Salebot error; catch it to handle them all.

    No instance ever holds the API key: messages show the URL as ``/api/***/<action>``.

    :param message: the human-readable explanation.
    :param action: the Salebot action the error belongs to, if any.
    :param in_doubt: True when the request may have reached Salebot and been processed even though
        no good reply came back (a read timeout, a reset after sending, a 5xx). A send that fails in
        doubt must not be repeated blindly: that could message a customer twice.
    """

    #: Set by the chunked helpers: the items of the chunk that failed.
    failed_chunk: list[Any] | None = None
    #: Set by the chunked helpers: how many items earlier chunks completed before this one failed.
    items_done: int = 0

    def __init__(self, message: str, *, action: str | None = None, in_doubt: bool = False) -> None:
        super().__init__(message)
        self.action = action
        self.in_doubt = in_doubt


class SalebotAPIError(SalebotError):
    """
    Salebot answered, and the answer was not a success.

    Raised for a ``status`` other than ``"success"`` (even with HTTP 200), a non-2xx reply, and a
    2xx reply whose body is not the JSON the API promises.

    :param message: the human-readable explanation.
    :param action: the Salebot action.
    :param http_status: the HTTP status code of the reply.
    :param api_status: the ``status`` field of the JSON body, if there was one.
    :param api_message: the ``message`` field of the JSON body, if there was one.
    :param excerpt: a short, key-free excerpt of the body.
    :param retry_after: seconds the service asked us to wait (``Retry-After``), if it did.
    :param in_doubt: whether the request may have been processed (a 5xx or a malformed 2xx).
    """

    def __init__(
        self,
        message: str,
        *,
        action: str | None = None,
        http_status: int | None = None,
        api_status: str | None = None,
        api_message: str | None = None,
        excerpt: str = "",
        retry_after: float | None = None,
        in_doubt: bool = False,
    ) -> None:
        super().__init__(message, action=action, in_doubt=in_doubt)
        self.http_status = http_status
        self.api_status = api_status
        self.api_message = api_message
        self.excerpt = excerpt
        self.retry_after = retry_after


class SalebotPermissionError(SalebotAPIError):
    """The API key was refused, or lacks the permission the action needs (the message names it)."""


class SalebotNotFoundError(SalebotAPIError):
    """The client or the order does not exist (``client_not_found``, ``order ... not found``, HTTP 404)."""


class SalebotConnectionError(SalebotError):
    """
    No reply came back: the connection was refused, timed out or was reset.

    ``in_doubt`` is False only when the connection never opened, so nothing can have been sent.
    """


class SalebotValidationError(SalebotError, ValueError):
    """Bad input, found before any request was sent; the message names the parameter and the rule."""

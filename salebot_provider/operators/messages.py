"""SendMessageOperator: one message to a Salebot client, or from a WhatsApp bot to a phone number."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from salebot_provider.api import validate
from salebot_provider.exceptions import SalebotValidationError
from salebot_provider.operators._base import SalebotOperator
from salebot_provider.operators._once import SCHEDULE, arguments, send_once

if TYPE_CHECKING:
    import datetime as dt
    from collections.abc import Sequence

    from airflow.providers.common.compat.sdk import Context

#: Valid stand-ins for arguments that come from a template or an XCom, while the DAG file is parsed.
_PLACEHOLDERS: dict[str, Any] = {
    "client_id": 1,
    "phone": "79990000000",
    "whatsapp_bot_id": "bot",
    "message": "text",
    "message_id": 1,
    "attachment_url": "https://example.com/file",
    "attachment_type": "file",
    "buttons": [],
    "time_shift": 0,
    "send_time": "2000-01-01 00:00:00",
}
#: The argument each action does not take, and why.
_ONLY_WITH_THE_OTHER = {
    "message": ("whatsapp_bot_id", "applies only with 'phone'"),
    "whatsapp_message": ("buttons", "apply only with 'client_id': whatsapp_message takes no buttons"),
}


class SendMessageOperator(SalebotOperator):
    """
    Send one message: to a Salebot client (action ``message``), or to a phone number from a WhatsApp bot.

    Exactly one recipient: ``client_id``, or ``phone`` (action ``whatsapp_message``, optionally with
    ``whatsapp_bot_id``). The content is a text and/or a file (``attachment_url`` with
    ``attachment_type``), optionally a bot block (``message_id``) and, for a client, ``buttons``.
    The message is never sent twice: on Airflow 3.3+ the send is recorded in the task's
    ``task_state_store``, so a retry or a clear after a success returns the same result without a
    request, and a try that meets a send that may have gone out (a timeout or a 5xx after sending)
    fails without resending it.

    .. code-block:: python

        SendMessageOperator(
            task_id="confirm",
            client_id="{{ params.client_id }}",
            message="Your order {{ ti.xcom_pull(task_ids='create_order') }} is confirmed",
            buttons=[{"text": "Track it", "url": "https://shop.example/track"}],
        )

    :param client_id: the recipient's client id in Salebot. (templated)
    :param phone: the recipient's phone, for a message from a WhatsApp bot. (templated)
    :param whatsapp_bot_id: the WhatsApp bot to send from, with ``phone`` ("messengers and chats").
        (templated)
    :param message: the text; required unless a file is sent. (templated)
    :param message_id: a bot block to send, with a text or a file. (templated)
    :param attachment_url: a file's URL, with ``attachment_type``. (templated)
    :param attachment_type: image, video, link, file or audio. (templated)
    :param buttons: buttons, with or without a hint, as the API takes them; with ``client_id`` only.
        (templated)
    :param time_shift: send this many seconds from now. (templated)
    :param send_time: send at this moment: a datetime (an aware one is converted to the connection's
        time zone), a ``%Y-%m-%d %H:%M:%S`` string in that zone, or an ISO 8601 string with an offset.
        (templated)
    :param salebot_conn_id: the Airflow connection of type ``salebot``.
    :return: ``{"client_id": 42, "sent": True}`` or ``{"phone": "79990001122", "sent": True}``.
    """

    template_fields: Sequence[str] = tuple(_PLACEHOLDERS)
    template_fields_renderers: ClassVar[dict[str, str]] = {"buttons": "json"}

    def __init__(
        self,
        *,
        client_id: int | str | None = None,
        phone: str | int | None = None,
        whatsapp_bot_id: str | int | None = None,
        message: str | None = None,
        message_id: int | str | None = None,
        attachment_url: str | None = None,
        attachment_type: str | None = None,
        buttons: Any = None,
        time_shift: float | None = None,
        send_time: str | dt.datetime | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.client_id = client_id
        self.phone = phone
        self.whatsapp_bot_id = whatsapp_bot_id
        self.message = message
        self.message_id = message_id
        self.attachment_url = attachment_url
        self.attachment_type = attachment_type
        self.buttons = buttons
        self.time_shift = time_shift
        self.send_time = send_time
        self._check(parsing=True)

    def _check(self, *, parsing: bool = False) -> tuple[str, dict[str, Any]]:
        """Check the arguments; return the action and its parameters (see ``arguments``)."""
        to = [name for name in ("client_id", "phone") if getattr(self, name) is not None]
        if len(to) != 1:
            raise SalebotValidationError(
                "Salebot message: give exactly one recipient: 'client_id' (a Salebot client) or 'phone' "
                f"(a WhatsApp number, with 'whatsapp_bot_id'); got {', '.join(to) or 'none'}",
                action="message",
            )
        action = "message" if to == ["client_id"] else "whatsapp_message"
        misplaced, rule = _ONLY_WITH_THE_OTHER[action]
        if getattr(self, misplaced) is not None:
            raise SalebotValidationError(f"Salebot {action}: '{misplaced}' {rule}", action=action)
        params = arguments(action, self, _PLACEHOLDERS, parsing=parsing)
        validate(action, params)
        return action, params

    def execute(self, context: Context) -> dict[str, Any]:
        """Check everything, then send once; see the class docstring."""
        action, params = self._check()
        if action == "message":
            summary: dict[str, Any] = {"client_id": int(params["client_id"]), "sent": True}
            what = f"the message to client {params['client_id']}"
        else:
            summary = {"phone": str(params["phone"]), "sent": True}
            what = f"the WhatsApp message to {params['phone']}"
        send = getattr(self.hook, action)
        content = [{k: v for k, v in params.items() if k not in SCHEDULE}]

        def once() -> dict[str, Any]:
            send(**params)
            return summary

        result: dict[str, Any] = send_once(self, context, action, what, content, once)
        return result

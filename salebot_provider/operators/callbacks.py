"""CallbackOperator: start a Salebot funnel for one client, found by id, phone, email or messenger id."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

from salebot_provider.api import validate
from salebot_provider.exceptions import SalebotValidationError
from salebot_provider.operators._base import SalebotOperator, is_literal
from salebot_provider.operators._once import SCHEDULE, arguments, send_once

if TYPE_CHECKING:
    import datetime as dt
    from collections.abc import Sequence

    from airflow.providers.common.compat.sdk import Context


class _Channel(NamedTuple):
    """A channel's action, the arguments that identify the client, and the others it takes."""

    action: str
    required: tuple[str, ...]
    optional: tuple[str, ...] = ()
    one_of: tuple[str, ...] = ()


#: Each channel's action and arguments, as the action table has them.
CHANNELS: dict[str, _Channel] = {
    "client": _Channel("callback", (), one_of=("client_id", "client_phone", "client_email")),
    "vk": _Channel("vk_callback", ("user_id", "group_id")),
    "tg": _Channel("tg_callback", ("user_id", "group_id")),
    "ok": _Channel("ok_callback", ("user_id", "group_id"), ("name",)),
    "whatsapp": _Channel("whatsapp_callback", ("phone",), ("bot_id", "name")),
    "email": _Channel("email_callback", ("email",), ("email_id_bot", "name")),
}
#: Valid stand-ins for arguments that come from a template or an XCom, while the DAG file is parsed.
_PLACEHOLDERS: dict[str, Any] = {
    "client_id": 1,
    "client_phone": "79990000000",
    "client_email": "client@example.com",
    "user_id": "1",
    "group_id": "1",
    "phone": "79990000000",
    "bot_id": "bot",
    "email": "client@example.com",
    "email_id_bot": "bot@example.com",
    "name": "name",
    "message": "text",
    "resume_bot": True,
    "time_shift": 0,
    "send_time": "2000-01-01 00:00:00",
}
#: The arguments whose use depends on the channel.
_BY_CHANNEL = tuple(name for name in _PLACEHOLDERS if name not in ("message", "resume_bot", *SCHEDULE))


class CallbackOperator(SalebotOperator):
    """
    Start a funnel (a callback) for one client; the client does not see the callback's text.

    ``channel`` says how the client is found, and which arguments identify it:

    - ``"client"`` (action ``callback``): exactly one of ``client_id``, ``client_phone``,
      ``client_email``;
    - ``"vk"``, ``"tg"``, ``"ok"`` (``vk_callback`` ...): ``user_id`` and ``group_id`` (for
      Telegram the bot's name, ending with ``bot``); ``"ok"`` also takes ``name``;
    - ``"whatsapp"`` (``whatsapp_callback``): ``phone``, optionally ``bot_id`` and ``name``;
    - ``"email"`` (``email_callback``): ``email``, optionally ``email_id_bot`` and ``name``.

    ``variables`` are saved on the client by Salebot (the API's extra fields). The callback is
    never sent twice: on Airflow 3.3+ it is recorded in the task's ``task_state_store``, so a
    retry or a clear after a success returns the same result without a request, and a try that
    meets a callback that may have gone out (a timeout or a 5xx after sending) fails without
    resending it.

    .. code-block:: python

        CallbackOperator(
            task_id="start_onboarding",
            channel="tg",
            user_id="{{ params.telegram_id }}",
            group_id="shop_bot",
            message="onboarding",
            variables={"plan": "{{ params.plan }}"},
        )

    :param channel: client, vk, tg, ok, whatsapp or email. (templated)
    :param client_id: the client's id in Salebot, for ``"client"``. (templated)
    :param client_phone: find the client by phone, for ``"client"``. (templated)
    :param client_email: find the client by email, for ``"client"``. (templated)
    :param user_id: the messenger's user id, for ``"vk"``, ``"tg"``, ``"ok"``. (templated)
    :param group_id: the VK or OK group id, or the Telegram bot's name. (templated)
    :param phone: the client's phone, for ``"whatsapp"``. (templated)
    :param bot_id: the WhatsApp bot, for ``"whatsapp"``. (templated)
    :param email: the client's email address, for ``"email"``. (templated)
    :param email_id_bot: the bot's email address, for ``"email"``. (templated)
    :param name: the client's name, for ``"ok"``, ``"whatsapp"``, ``"email"``. (templated)
    :param message: the callback's text, which the funnel reacts to. (templated)
    :param resume_bot: True takes a paused bot off pause. (templated)
    :param time_shift: send this many seconds from now. (templated)
    :param send_time: send at this moment: a datetime, a ``%Y-%m-%d %H:%M:%S`` string in the
        connection's time zone, or an ISO 8601 string with an offset. (templated)
    :param variables: name -> value, saved as the client's variables. (templated)
    :param salebot_conn_id: the Airflow connection of type ``salebot``.
    :return: the channel and the identifying arguments, e.g.
        ``{"channel": "tg", "user_id": "146467928", "group_id": "shop_bot", "sent": True}``.
    """

    template_fields: Sequence[str] = ("channel", *_PLACEHOLDERS, "variables")
    template_fields_renderers: ClassVar[dict[str, str]] = {"variables": "json"}

    def __init__(
        self,
        *,
        channel: str = "client",
        client_id: int | str | None = None,
        client_phone: str | int | None = None,
        client_email: str | None = None,
        user_id: str | int | None = None,
        group_id: str | int | None = None,
        phone: str | int | None = None,
        bot_id: str | int | None = None,
        email: str | None = None,
        email_id_bot: str | None = None,
        name: str | None = None,
        message: str | None = None,
        resume_bot: bool | None = None,
        time_shift: float | None = None,
        send_time: str | dt.datetime | None = None,
        variables: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.channel = channel
        self.client_id = client_id
        self.client_phone = client_phone
        self.client_email = client_email
        self.user_id = user_id
        self.group_id = group_id
        self.phone = phone
        self.bot_id = bot_id
        self.email = email
        self.email_id_bot = email_id_bot
        self.name = name
        self.message = message
        self.resume_bot = resume_bot
        self.time_shift = time_shift
        self.send_time = send_time
        self.variables = variables
        if is_literal(channel):
            self._check(parsing=True)

    def _check(self, *, parsing: bool = False) -> tuple[_Channel, dict[str, Any], dict[str, Any]]:
        """Check the arguments; return the channel, the action's parameters and the variables."""
        channel = CHANNELS.get(self.channel) if isinstance(self.channel, str) else None
        if channel is None:
            raise SalebotValidationError(
                f"Salebot callback: 'channel' must be one of {', '.join(CHANNELS)}; got {self.channel!r:.60}",
                action="callback",
            )
        action, takes = channel.action, (*channel.required, *channel.optional, *channel.one_of)
        given = [name for name in _BY_CHANNEL if getattr(self, name) is not None]
        extra = [name for name in given if name not in takes]
        missing = [name for name in channel.required if name not in given]
        if extra or missing:
            problems = [f"lacks {', '.join(missing)}"] * bool(missing)
            problems += [f"does not take {', '.join(extra)}"] * bool(extra)
            raise SalebotValidationError(
                f"Salebot {action}: channel {self.channel!r} {' and '.join(problems)} (it takes "
                f"{', '.join(takes)})",
                action=action,
            )
        named = [name for name in channel.one_of if name in given]
        if channel.one_of and len(named) != 1:
            raise SalebotValidationError(
                f"Salebot {action}: give exactly one of {', '.join(channel.one_of)}; "
                f"got {', '.join(named) or 'none'}",
                action=action,
            )
        params = arguments(action, self, _PLACEHOLDERS, parsing=parsing)
        variables = arguments(action, self, {"variables": {}}, parsing=parsing).get("variables", {})
        if not isinstance(variables, Mapping):
            raise SalebotValidationError(
                f"Salebot {action}: 'variables' must be a mapping of names to values; got {variables!r:.60}",
                action=action,
            )
        validate(action, params, variables)
        return channel, params, dict(variables)

    def execute(self, context: Context) -> dict[str, Any]:
        """Check everything, then send once; see the class docstring."""
        channel, params, variables = self._check()
        who = {name: params[name] for name in (*channel.required, *channel.one_of) if name in params}
        what = f"the {channel.action} to {', '.join(f'{k} {v}' for k, v in who.items())}"
        send = getattr(self.hook, channel.action)
        content = [{k: v for k, v in params.items() if k not in SCHEDULE}, variables]

        def once() -> dict[str, Any]:
            send(**params, extra=variables or None)
            return {"channel": self.channel, **who, "sent": True}

        result: dict[str, Any] = send_once(self, context, channel.action, what, content, once)
        return result

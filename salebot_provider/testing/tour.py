"""A short tour of the hook against the emulator: ``python -m salebot_provider.testing.tour``."""

from __future__ import annotations

import os

from salebot_provider.exceptions import SalebotError
from salebot_provider.hooks import SalebotHook
from salebot_provider.testing.emulator import SalebotEmulator


def main() -> None:
    """Start an emulator with 2,000 clients and walk through the things a nightly CRM sync does."""
    with SalebotEmulator(clients=2000, seed=1) as emulator:
        os.environ["AIRFLOW_CONN_SALEBOT_DEFAULT"] = emulator.connection_json(backoff_factor=0.1)
        hook = SalebotHook()
        step = iter(range(1, 100))

        def say(text: str) -> None:
            print(f"{next(step)}. {text}")

        say(f"Emulator at {emulator.base_url}; test_connection: {hook.test_connection()[1]}")
        total = sum(1 for _ in hook.iter_clients())
        say(f"iter_clients paged out {total} clients, 500 a request")
        rows = [{"platform_id": f"7911{i:07d}", "group_id": "wa_main", "client_type": 6} for i in range(1200)]
        loaded = [item for r in hook.iter_chunked("load_clients", rows) for item in r.reply["items"]]
        ok = sum(item["status"] == "success" for item in loaded)
        say(f"load_clients: {len(loaded)} rows in chunks of 500, {ok} ok")
        vip = hook.find_clients({"segment": "vip", "city": {"_in": ["Казань", "Москва"]}})["client_ids"]
        hook.save_variables(clients=vip, variables={"client.campaign": "black-friday"})
        say(f"find_clients: {len(vip)} VIPs in Kazan or Moscow tagged with save_variables")
        hook.broadcast(clients=vip[:50], message="Скидка 20% до пятницы", shift=0.5, time_shift=3600)
        due = [item.due_at for item in emulator.outbox]
        say(f"broadcast to {len(due)} of them, due in an hour, 0.5 s apart (outbox: {len(emulator.outbox)})")
        emulator.inject("message", status=502, processed=True, times=1)
        try:
            hook.message(vip[0], message="Ваш заказ готов")
        except SalebotError as exc:
            sent = sum(1 for item in emulator.outbox if item.action == "message")
            say(f"a 502 after the message went out: in_doubt={exc.in_doubt}, sent {sent} time(s), not again")
        order = hook.create_order(client_id=vip[0], name="Заказ", budget=4900)["order_id"]
        hook.move_order_to_next_state(vip[0], order_id=order)
        say(
            f"create_order {order}, moved to state {hook.get_order_state(vip[0], order_id=order)['state_id']}"
        )
        try:
            hook.broadcast(list_id=1170282, clients=[1], message="?")
        except SalebotError as exc:
            say(f"bad input is refused before sending: {exc}")
        say(f"{len(emulator.requests)} requests served; the key appeared in none of the lines above")


if __name__ == "__main__":
    main()

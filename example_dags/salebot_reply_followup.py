"""
Follow up a client's reply, as it arrives: "стоп" unsubscribes, any other reply moves the deal on.

Scheduled on the Asset of inbound webhook messages (Airflow 3.3+): ``SalebotMessageTrigger`` in the
triggerer follows the receiver's spool (``SALEBOT_WEBHOOK_SPOOL``), or the Redis stream the
receivers forward to (``SALEBOT_WEBHOOK_REDIS_CONN``, an Airflow Redis connection id), and each
message a client writes becomes an asset event. A run may carry several; each is handled once:

- a reply that starts with "стоп" or "stop": the client's ``unsubscribed`` variable is set and a
  confirmation is sent;
- any other reply: the client's current deal moves to the next state of its funnel.

The events carry ids and labels, not the text (the trigger's ``labels`` say which reply is a "stop").
The ids handled are kept in the asset's ``asset_state_store``, so a repeated event is never handled
twice; a send that failed in doubt is named and not sent again. To replay events by hand, trigger
the DAG with ``{"events": [{"id": ..., "client_id": ..., "labels": [...]}]}``.

Each run also looks at the asset's latest events, and the DAG runs on a timetable too
(``SALEBOT_EXAMPLE_REPLY_SWEEP``, every five minutes by default): on Airflow 3.3 an event stored
while the scheduler is creating a run can be left out of it and out of any later run until another
event comes (apache/airflow#56050, fixed in 3.4), and the sweep handles it within minutes instead.
Runs may overlap; the task itself runs one at a time, as it keeps one ledger of handled ids.
"""

from __future__ import annotations

import datetime as dt
import os

from airflow.sdk import DAG, Asset, AssetOrTimeSchedule, AssetWatcher, CronTriggerTimetable, task

from salebot_provider.webhook import SalebotMessageTrigger

SPOOL = os.environ.get("SALEBOT_WEBHOOK_SPOOL", "/var/lib/salebot-webhook")
REDIS_CONN = os.environ.get("SALEBOT_WEBHOOK_REDIS_CONN")
STOP = r"(?i)^\W*(стоп|stop)\b"
CONFIRMATION = "Вы отписались от рассылки. Чтобы подписаться снова, напишите «старт»."
#: How many handled message ids the DAG remembers.
REMEMBERED = 5_000
RETRY_DELAY = float(os.environ.get("SALEBOT_EXAMPLE_RETRY_DELAY", "30"))
#: How often a run comes without a new event, to handle events a run left out.
SWEEP = os.environ.get("SALEBOT_EXAMPLE_REPLY_SWEEP", "*/5 * * * *")
#: How many of the asset's latest events each run looks at, besides its own.
RECENT = 1_000

source = {"redis": REDIS_CONN} if REDIS_CONN else {"spool": SPOOL}
inbound = Asset(
    "salebot_inbound_messages",
    watchers=[
        AssetWatcher(
            name="salebot_inbound_replies",
            trigger=SalebotMessageTrigger(**source, is_input=1, labels={"stop": STOP}, start="end"),
        )
    ],
)

with DAG(
    "salebot_reply_followup",
    schedule=AssetOrTimeSchedule(timetable=CronTriggerTimetable(SWEEP, timezone="UTC"), assets=[inbound]),
    start_date=dt.datetime(2026, 1, 1),
    catchup=False,
    tags=["salebot", "example"],
    doc_md=__doc__,
) as dag:

    @task(
        inlets=[inbound],
        retries=2,
        retry_delay=dt.timedelta(seconds=RETRY_DELAY),
        max_active_tis_per_dag=1,  # one at a time: one ledger of handled ids
    )
    def follow_up(
        triggering_asset_events=None, inlet_events=None, dag_run=None, asset_state_store=None
    ) -> dict:
        """Handle each event of the run, and any recent one not handled yet, once."""
        from salebot_provider.exceptions import SalebotError, SalebotNotFoundError
        from salebot_provider.hooks import SalebotHook

        mine = [e.extra.get("payload") or {} for e in (triggering_asset_events or {}).get(inbound, [])]
        recent = [e.extra.get("payload") or {} for e in inlet_events[inbound].ascending(False).limit(RECENT)]
        given = (dag_run.conf or {}).get("events", [])
        events = list({str(e.get("id")): e for e in [*reversed(recent), *mine, *given]}.values())
        ledger = asset_state_store[inbound]
        handled = list(ledger.get("reply_followup:handled") or [])
        started = set(ledger.get("reply_followup:started") or [])
        done = {
            "events": len(events),
            "triggering": len(mine),
            "stopped": 0,
            "moved": 0,
            "repeats": 0,
            "no_deal": 0,
            "notices": 0,
            "in_doubt": [],
        }
        with SalebotHook() as hook:
            for event in events:
                message, client_id = str(event.get("id")), event.get("client_id")
                if message in handled or not client_id:
                    done["repeats"] += 1
                    continue
                if message in started:  # a try that died mid-send: it may have gone out
                    done["in_doubt"].append(message)
                    continue
                started.add(message)
                ledger.set("reply_followup:started", sorted(started))
                try:
                    if event.get("notice"):  # "user_blocked", "subscribe"...: Salebot's, not a reply
                        done["notices"] += 1
                    elif "stop" in (event.get("labels") or []):
                        hook.save_variables({"client.unsubscribed": 1}, client_id=client_id)
                        hook.message(client_id, message=CONFIRMATION)
                        done["stopped"] += 1
                    else:
                        hook.move_order_to_next_state(client_id)
                        done["moved"] += 1
                except SalebotNotFoundError:
                    done["no_deal"] += 1
                except SalebotError as exc:
                    if exc.in_doubt:
                        raise  # it stays "started": a retry names it, never resends it
                    started.discard(message)  # surely not processed: a retry handles it again
                    ledger.set("reply_followup:started", sorted(started))
                    raise
                handled = [*handled, message][-REMEMBERED:]
                started.discard(message)
                ledger.set("reply_followup:handled", handled)
                ledger.set("reply_followup:started", sorted(started))
        if done["in_doubt"]:
            print(f"replies in doubt (a try died handling them; check them in Salebot): {done['in_doubt']}")
        return done

    follow_up()

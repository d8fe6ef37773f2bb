"""salebot_reply_followup: "стоп" unsubscribes, a reply moves the deal, each once; a notice does nothing."""

from __future__ import annotations

from typing import Any

from tests.dags.conftest import no_key, task_instances


def events_for(stop: int, other: int, no_deal: int) -> list[dict[str, Any]]:
    return [
        {"id": "9001", "client_id": stop, "is_input": True, "labels": ["stop"]},
        {"id": "9002", "client_id": other, "is_input": True, "labels": []},
        {"id": "9003", "client_id": no_deal, "is_input": True, "labels": []},
        {"id": "9002", "client_id": other, "is_input": True, "labels": []},  # the same message twice
        {"id": "9004", "client_id": other, "is_input": True, "notice": "user_blocked", "labels": []},
    ]


def test_each_reply_is_handled_once_and_a_replayed_event_sends_nothing(
    salebot_emulator: Any, run_dag: Any, example: Any, capfd: Any
) -> None:
    stop, other = salebot_emulator.seed_clients(2, seed=11, with_deals=False)
    (no_deal,) = salebot_emulator.seed_clients(1, seed=12, with_deals=False)
    with salebot_emulator.state.lock:
        deal = salebot_emulator.state.add_deal(other, 101)
    dag = example("salebot_reply_followup")
    events = events_for(stop, other, no_deal)
    first = run_dag(dag, logical_date=None, events=events)
    ti = task_instances(first)["follow_up"]
    assert ti.state == "success"
    assert ti.xcom_pull(task_ids="follow_up") == {
        "events": 4,  # the message given twice is one
        "triggering": 0,
        "stopped": 1,
        "moved": 1,  # once: the client's notice moved nothing
        "repeats": 0,
        "no_deal": 1,
        "notices": 1,
        "in_doubt": [],
    }
    assert salebot_emulator.client(stop).variables["unsubscribed"] == 1
    [confirmation] = salebot_emulator.outbox
    assert (confirmation.client_id, confirmation.text.startswith("Вы отписались")) == (stop, True)
    assert salebot_emulator.deal(deal.id).state_id == 102
    # The same events again (a triggerer crash redelivers them, or a user replays them): nothing twice.
    again = run_dag(dag, logical_date=None, events=events)
    assert task_instances(again)["follow_up"].xcom_pull(task_ids="follow_up")["repeats"] == 4
    assert len(salebot_emulator.outbox) == 1
    assert salebot_emulator.deal(deal.id).state_id == 102
    no_key(salebot_emulator, *capfd.readouterr())


def test_a_send_in_doubt_is_named_and_never_sent_again(
    salebot_emulator: Any, run_dag: Any, example: Any, capfd: Any
) -> None:
    (stop,) = salebot_emulator.seed_clients(1, seed=13, with_deals=False)
    salebot_emulator.inject("message", status=502, processed=True, times=1)  # sent, then a 502
    dag = example("salebot_reply_followup")
    event = [{"id": "9100", "client_id": stop, "is_input": True, "labels": ["stop"]}]
    dag_run = run_dag(dag, logical_date=None, events=event)
    ti = task_instances(dag_run)["follow_up"]
    # The 502 failed the try; Airflow's retry names the message in doubt and does not send it again.
    assert ti.state == "success"
    assert ti.try_number == 2
    assert ti.xcom_pull(task_ids="follow_up")["in_doubt"] == ["9100"]
    assert len([i for i in salebot_emulator.outbox if i.client_id == stop]) == 1
    out, err = capfd.readouterr()
    assert "replies in doubt" in out + err
    no_key(salebot_emulator, out, err)


def test_an_event_no_run_took_is_handled_by_the_next_run(
    salebot_emulator: Any, run_dag: Any, example: Any
) -> None:
    """Airflow 3.3 can leave an event out of every run (apache/airflow#56050): a later run takes it."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    (client,) = salebot_emulator.seed_clients(1, seed=14, with_deals=False)
    with salebot_emulator.state.lock:
        deal = salebot_emulator.state.add_deal(client, 101)
    dag = example("salebot_reply_followup")
    run_dag(dag, logical_date=None)  # the asset is in the database
    with create_session() as session:
        asset_id = session.scalar(select(AssetModel.id).where(AssetModel.name == "salebot_inbound_messages"))
        payload = {"id": "9200", "client_id": client, "is_input": True, "labels": []}
        session.add(AssetEvent(asset_id=asset_id, extra={"payload": payload}))  # stored, in no run
    result = task_instances(run_dag(dag, logical_date=None))["follow_up"].xcom_pull(task_ids="follow_up")
    assert (result["triggering"], result["moved"]) == (0, 1)
    assert salebot_emulator.deal(deal.id).state_id == 102
    again = task_instances(run_dag(dag, logical_date=None))["follow_up"].xcom_pull(task_ids="follow_up")
    assert again["moved"] == 0  # handled once

"""
Benchmark of the webhook receiver: messages per second it holds, and the latency of each answer.

Run with ``make bench`` (or ``.venv/bin/python bench/webhook.py``); about a minute.

The receiver runs as its console script (``salebot-webhook``, uvicorn) in its own process, on
loopback, with the spool in a temporary folder. A client in this process keeps ``CONNECTIONS``
keep-alive connections and posts webhook messages (the vendor's payload, about 600 bytes, each with
its own id) as fast as the answers come, for ``MESSAGES`` messages a case; the latency of a message
is from its request's first byte sent to its answer's last byte read. Each 200 means the message is
written to the spool file (durability: it survives a kill of the receiver); with ``--fsync`` it is
also synced to the disk (it survives a power loss). Cases, side by side in one run:

- write completed (the default), 16 connections;
- write completed, 1 connection (one message at a time: the latency alone);
- fsync on, 16 connections (concurrent requests share a sync: group commit).

Afterwards the spool is read back: every acknowledged message must be there, once.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from salebot_provider.webhook.spool import SpoolReader

MESSAGES = 20_000
CONNECTIONS = 16
SECRET = "bench-secret-" + "b" * 16
#: Targets (docs/performance.md): with the write completed before each 200.
MIN_RATE, MAX_P99_MS = 1_000.0, 50.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def body(n: int) -> bytes:
    return json.dumps(
        {
            "id": 1_000_000 + n,
            "client": {
                "id": 40_000_000 + n % 5000,
                "recepient": f"7900{n:07d}",
                "client_type": 6,
                "name": "Анна Петрова",
                "avatar": None,
                "created_at": "2026-11-30 10:00:00",
                "tag": "promo",
                "group": "shop_bot",
                "variables": {"tier": "gold", "city": "Казань"},
            },
            "message": "Здравствуйте! Когда будет доставка моего заказа? " + "x" * (n % 80),
            "attachments": [],
            "message_id": None,
            "project_id": 1,
            "is_input": 1,
            "delivered": 1,
            "error_message": "",
        },
        ensure_ascii=False,
    ).encode()


def start(spool: Path, port: int, fsync: bool) -> subprocess.Popen[bytes]:
    script = Path(sys.executable).with_name("salebot-webhook")
    argv = [str(script), "--spool", str(spool), "--port", str(port), *(["--fsync"] if fsync else [])]
    process = subprocess.Popen(
        argv,
        env={**os.environ, "SALEBOT_WEBHOOK_SECRET": SECRET},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), 0.2):
                return process
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise SystemExit("the receiver did not start")


async def connection(port: int, numbers: list[int], latencies: list[float], statuses: list[int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = f"POST /{SECRET} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
    for n in numbers:
        payload = body(n)
        request = f"{head}Content-Length: {len(payload)}\r\n\r\n".encode() + payload
        began = time.perf_counter()
        writer.write(request)
        await writer.drain()
        status_line = await reader.readline()
        length = 0
        while (line := await reader.readline()) not in (b"\r\n", b""):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        await reader.readexactly(length)
        latencies.append(time.perf_counter() - began)
        statuses.append(int(status_line.split()[1]))
    writer.close()


def case(name: str, fsync: bool, connections: int, messages: int) -> dict[str, float | str]:
    with tempfile.TemporaryDirectory(prefix="salebot-bench-webhook-") as folder:
        spool, port = Path(folder) / "spool", free_port()
        process = start(spool, port, fsync)
        try:
            latencies: list[float] = []
            statuses: list[int] = []
            numbers = list(range(messages))
            shares = [numbers[k::connections] for k in range(connections)]

            async def run() -> None:
                await asyncio.gather(*(connection(port, share, latencies, statuses) for share in shares))

            began = time.perf_counter()
            asyncio.run(run())
            took = time.perf_counter() - began
        finally:
            process.terminate()
            process.wait(30)
        ids = [record["message"]["id"] for record, _, _ in SpoolReader(spool).read(messages + 10)]
        assert statuses.count(200) == messages, f"{name}: answers {set(statuses)}"
        assert sorted(map(int, ids)) == [1_000_000 + n for n in numbers], f"{name}: the spool lacks messages"
    ordered = sorted(latencies)
    return {
        "case": name,
        "rate": messages / took,
        "p50": statistics.median(ordered) * 1000,
        "p99": ordered[int(len(ordered) * 0.99) - 1] * 1000,
        "max": ordered[-1] * 1000,
    }


def main() -> None:
    print(
        f"Webhook receiver on loopback: {MESSAGES:,} messages a case, the console script (uvicorn) in its "
        f"own process, the client here ({os.cpu_count()} cores, Python {sys.version.split()[0]})"
    )
    rows = [
        case(f"write completed, {CONNECTIONS} connections", False, CONNECTIONS, MESSAGES),
        case("write completed, 1 connection", False, 1, MESSAGES // 4),
        case(f"fsync on, {CONNECTIONS} connections", True, CONNECTIONS, MESSAGES),
    ]
    base = float(rows[0]["rate"])
    print(f"  {'case':<36}{'messages/s':>12}{'vs first':>10}{'p50 (ms)':>10}{'p99 (ms)':>10}{'max (ms)':>10}")
    for row in rows:
        print(
            f"  {row['case']:<36}{row['rate']:>12,.0f}{float(row['rate']) / base:>9.2f}x"
            f"{row['p50']:>10.2f}{row['p99']:>10.2f}{row['max']:>10.1f}"
        )
    print("  (every acknowledged message was read back from the spool, once)")
    first = rows[0]
    rate, p99 = float(first["rate"]), float(first["p99"])
    print("\nTargets:")
    verdict = "met" if rate >= MIN_RATE else "MISSED"
    print(f"  at least {MIN_RATE:,.0f} messages/s with the write completed: {rate:,.0f} {verdict}")
    print(f"  p99 under {MAX_P99_MS:.0f} ms: {p99:.1f} ms {'met' if p99 < MAX_P99_MS else 'MISSED'}")


if __name__ == "__main__":
    main()

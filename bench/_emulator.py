"""What the benchmarks share: the Salebot emulator in a process of its own, driven by its admin API."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any


class Emulator:
    """The ``salebot-emulator`` console script in its own process, and its admin API."""

    def __init__(self, clients: int, seed: int = 1) -> None:
        import httpx

        script = Path(sys.executable).with_name("salebot-emulator")
        self.proc = subprocess.Popen(
            [str(script), "--port", "0", "--clients", str(clients), "--seed", str(seed)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        while True:
            line = self.proc.stdout.readline()
            if line.startswith("Connection JSON: "):
                self.connection: dict[str, Any] = json.loads(line.split(": ", 1)[1])
                break
            if not line:
                raise RuntimeError("salebot-emulator ended early")
        self.admin = httpx.Client(base_url=f"{self.connection['host']}/_emulator", timeout=300)

    def __enter__(self) -> Emulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.admin.close()
        self.proc.terminate()
        self.proc.wait()

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        reply = self.admin.request(method, path, json=body)
        reply.raise_for_status()
        return reply.json()

    def requests(self, action: str) -> int:
        """
        How many requests of ``action`` it has received so far.

        The request log is counted as it streams in, never parsed whole: a parent process that grew
        to hold it would pass its peak on to the children it starts (Linux keeps ``ru_maxrss``
        across fork and exec), and the children's peaks would be the parent's.
        """
        mark = f'"action": {json.dumps(action)},'.encode()
        count, tail = 0, b""
        with self.admin.stream("GET", "/requests") as reply:
            reply.raise_for_status()
            for chunk in reply.iter_bytes():
                text = tail + chunk
                count += text.count(mark)
                tail = text[-(len(mark) - 1) :]
        return count

    def variables(self, client_id: int) -> dict[str, Any]:
        return dict(self.call("GET", f"/clients/{client_id}")["variables"])

"""The ``salebot-emulator`` console script: run the emulator until interrupted."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import TYPE_CHECKING

from salebot_provider.testing.emulator import SalebotEmulator

if TYPE_CHECKING:
    from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """
    Start an emulator, print how to connect to it, and serve until Ctrl-C or SIGTERM.

    :param argv: the command-line arguments (``sys.argv[1:]`` when None).
    """
    parser = argparse.ArgumentParser(prog="salebot-emulator", description="Serve an emulated Salebot API.")
    parser.add_argument("--port", type=int, default=8080, help="port to listen on (0 picks a free one)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--clients", type=int, default=0, help="how many clients to seed")
    parser.add_argument("--seed", type=int, default=0, help="seed of the clients and of the faults")
    parser.add_argument("--api-key", default=None, help="the API key to accept (random when not given)")
    args = parser.parse_args(argv)

    emulator = SalebotEmulator(
        args.port, host=args.host, clients=args.clients, seed=args.seed, api_key=args.api_key
    )
    emulator.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print(f"Serving the Salebot emulator: {emulator.base_url}")
    print(f"API key: {emulator.api_key}")
    print(f"Connection JSON: {emulator.connection_json()}")
    print(f"  export AIRFLOW_CONN_SALEBOT_DEFAULT='{emulator.connection_json()}'")
    print(f"Admin API: {emulator.base_url}/_emulator/state (requests, outbox, faults, reset)", flush=True)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(
            "Warning: the admin API has no authentication; serve on 127.0.0.1 unless you mean it",
            file=sys.stderr,
        )
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        emulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

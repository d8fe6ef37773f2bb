"""The ``salebot-emulator`` console script: run the emulator until interrupted."""

from __future__ import annotations

import argparse
import errno
import logging
import signal
import sys
import threading
from typing import TYPE_CHECKING

from salebot_provider.api import DEFAULT_TIMEZONE
from salebot_provider.testing.emulator import SalebotEmulator

if TYPE_CHECKING:
    from collections.abc import Sequence

#: Not 8080 (Airflow's api-server) nor any other port Airflow listens on by default: 8793 and
#: 8794 (worker and triggerer logs), 8974 (scheduler health), 5555 (Flower).
DEFAULT_PORT = 8799


def _port(text: str) -> int:
    if not (text.isascii() and text.isdigit() and int(text) <= 65535):
        raise argparse.ArgumentTypeError(f"a port is a number from 0 to 65535; got {text!r}")
    return int(text)


def main(argv: Sequence[str] | None = None) -> int:
    """
    Start an emulator, print how to connect to it, and serve until Ctrl-C or SIGTERM.

    :param argv: the command-line arguments (``sys.argv[1:]`` when None).
    :return: the exit status: 0 after a clean stop, 2 when the emulator cannot start.
    """
    parser = argparse.ArgumentParser(
        prog="salebot-emulator",
        description="Serve an emulated Salebot API. Stop it with Ctrl-C or SIGTERM (kill PID).",
    )
    parser.add_argument(
        "--port",
        type=_port,
        default=DEFAULT_PORT,
        help="port to listen on (default: %(default)s; 0 picks a free one)",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: %(default)s; ::1 for IPv6)"
    )
    parser.add_argument("--clients", type=int, default=0, help="how many clients to seed")
    parser.add_argument("--seed", type=int, default=0, help="seed of the clients and of the faults")
    parser.add_argument("--api-key", default=None, help="the API key to accept (random when not given)")
    parser.add_argument(
        "--timezone",
        default=DEFAULT_TIMEZONE,
        help="the project's time zone, for send_time and history dates (default: %(default)s)",
    )
    parser.add_argument("--verbose", action="store_true", help="log each request to stderr (the key masked)")
    args = parser.parse_args(argv)
    if args.verbose:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        log = logging.getLogger("salebot_provider.testing.emulator")
        log.addHandler(handler)
        log.setLevel(logging.DEBUG)
        # Airflow's logging configuration, if any, is not for this process's request log.
        log.propagate = False

    try:
        emulator = SalebotEmulator(
            args.port,
            host=args.host,
            clients=args.clients,
            seed=args.seed,
            api_key=args.api_key,
            timezone=args.timezone,
        ).start()
    except ValueError as exc:
        print(f"salebot-emulator: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            problem = f"port {args.port} on {args.host} is in use: pass --port N, or --port 0 for a free one"
        else:
            problem = f"cannot listen on {args.host} port {args.port}: {exc.strerror or exc}"
        print(f"salebot-emulator: {problem}", file=sys.stderr)
        return 2
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

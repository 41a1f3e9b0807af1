"""Run the Keyrunes emulator as a process.

``python -m keyrunes_django.testing.server --host 127.0.0.1 --port 3000 --jwt-secret S
[--superadmin EMAIL:PASSWORD] [--superadmin-username NAME] [--seed FILE.json] [--server-quirks]``

Prints the base URL on one line once it accepts connections and exits cleanly
on SIGINT or SIGTERM. ``--port 0`` picks a free port. The seed file format is
described in :mod:`keyrunes_django.testing.emulator`.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from keyrunes_django.testing.app import DEFAULT_JWT_SECRET
from keyrunes_django.testing.emulator import KeyrunesEmulator, load_seed
from keyrunes_django.testing.state import EmulatorError

__all__ = ["build_parser", "main"]


def _superadmin(value: str) -> tuple[str, str]:
    email, sep, password = value.partition(":")
    if not sep or not email or not password:
        raise argparse.ArgumentTypeError("expected EMAIL:PASSWORD")
    return email, password


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m keyrunes_django.testing.server",
        description="Emulator of the Keyrunes HTTP API, for tests and demos.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3000, help="0 picks a free port")
    parser.add_argument(
        "--jwt-secret",
        default=os.environ.get("JWT_SECRET", DEFAULT_JWT_SECRET),
        help="HS256 signing secret (default: $JWT_SECRET, else the server's default)",
    )
    parser.add_argument(
        "--superadmin",
        type=_superadmin,
        metavar="EMAIL:PASSWORD",
        help="create a global superadmin in organization 1, namespace public",
    )
    parser.add_argument(
        "--superadmin-username", help="its username (default: the email's local part)"
    )
    parser.add_argument("--seed", metavar="FILE.json", help="JSON seed file")
    parser.add_argument(
        "--server-quirks",
        action="store_true",
        help="reproduce the defects of Keyrunes 0.2.0 (expired tokens pass, verify-org-key 500)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    superadmin: tuple[str, ...] | None = None
    if args.superadmin is not None:
        superadmin = args.superadmin
        if args.superadmin_username:
            superadmin = (*args.superadmin, args.superadmin_username)
    try:
        seed = load_seed(args.seed) if args.seed else None
        emulator = KeyrunesEmulator(
            jwt_secret=args.jwt_secret,
            superadmin=superadmin,
            server_quirks=args.server_quirks,
            seed=seed,
            host=args.host,
            port=args.port,
        )
        emulator.start()
    except (OSError, ValueError, KeyError, EmulatorError) as exc:
        print(f"keyrunes emulator: cannot start: {exc}", file=sys.stderr)
        return 1

    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    # The socket is bound and listening before start() returns, so it accepts connections now.
    print(emulator.base_url, flush=True)
    try:
        # A timed wait keeps the main thread responsive to signals.
        while not stop.is_set():
            stop.wait(0.5)
    finally:
        emulator.stop()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""Throughput of the Keyrunes emulator and its seeding time.

Run with ``make bench`` (``scripts/bench.sh``) or directly. In one process:

* ``POST /api/login`` and ``GET /api/me`` per second over one kept-alive
  connection (``requests.Session``), and the same with a new connection per
  request, so the keep-alive gain is printed as a ratio measured in this run;
* the time ``build_state`` takes to seed 5,000 and 10,000 users, and their
  ratio (about 2 when seeding is linear in the number of users).

Each throughput figure is the median of ``--rounds`` rounds of ``--requests``
requests. Exit status 1 if seeding 10,000 users grows clearly faster than
linearly (ratio above 3) or a connection is not kept alive.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import requests  # noqa: E402

from keyrunes_django.testing import KeyrunesEmulator, build_state  # noqa: E402

PASSWORD = "Secret123"


def per_second(call: Callable[[], None], requests_per_round: int, rounds: int) -> float:
    rates = []
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(requests_per_round):
            call()
        rates.append(requests_per_round / (time.perf_counter() - started))
    return statistics.median(rates)


def seeding_seconds(users: int) -> float:
    seed = {
        "users": [
            {"email": f"user{i}@example.com", "username": f"user{i}", "password": PASSWORD}
            for i in range(users)
        ]
    }
    started = time.perf_counter()
    build_state(seed=seed)
    return time.perf_counter() - started


def throughput(
    emulator: KeyrunesEmulator, keep_alive: bool, n: int, rounds: int
) -> tuple[float, float]:
    user = emulator.create_user(password=PASSWORD)
    login = {"identity": user.email, "password": PASSWORD, "namespace": "public"}
    token = emulator.issue_token(user)
    auth = {"Authorization": f"Bearer {token}"}
    session = requests.Session()

    def post_login() -> None:
        client = session if keep_alive else requests
        response = client.post(f"{emulator.base_url}/api/login", json=login, timeout=5)
        assert response.status_code == 200, response.text

    def get_me() -> None:
        client = session if keep_alive else requests
        response = client.get(f"{emulator.base_url}/api/me", headers=auth, timeout=5)
        assert response.status_code == 200, response.text

    return per_second(post_login, n, rounds), per_second(get_me, n, rounds)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=500, help="requests per round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    with KeyrunesEmulator() as emulator:
        login_ka, me_ka = throughput(emulator, True, args.requests, args.rounds)
        login_new, me_new = throughput(emulator, False, args.requests, args.rounds)
        connections = emulator.request_counts()
        session = requests.Session()
        session.get(f"{emulator.base_url}/api/health/live", timeout=5)
        first = session.get(f"{emulator.base_url}/api/health/live", timeout=5)
        kept_alive = first.headers.get("Connection", "").lower() != "close"
    small, large = seeding_seconds(5_000), seeding_seconds(10_000)

    print("Keyrunes emulator")
    print(
        f"  login/s   keep-alive {login_ka:8.0f}   new connection {login_new:8.0f}"
        f"   ratio {login_ka / login_new:.2f}"
    )
    print(
        f"  /api/me/s keep-alive {me_ka:8.0f}   new connection {me_new:8.0f}"
        f"   ratio {me_ka / me_new:.2f}"
    )
    print(f"  requests served: {sum(connections.values())}; connection kept alive: {kept_alive}")
    print(f"  seeding  5,000 users: {small:6.2f} s")
    print(
        f"  seeding 10,000 users: {large:6.2f} s   (10k/5k ratio {large / small:.2f}, linear = 2)"
    )
    failed = large / small > 3 or not kept_alive
    if failed:
        print("FAILED: seeding grows faster than linearly or keep-alive is off")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

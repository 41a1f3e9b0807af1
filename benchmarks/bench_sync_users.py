"""Benchmark: bulk user sync vs mirroring users one by one.

Mirrors 10,000 remote users spread over 200 groups into an empty SQLite
database (the test settings, ``tests.settings``) twice:

* one by one with ``get_mapper().mirror(identity)`` (what a login does), on a
  sample of users, extrapolated linearly to the full count (printed as such);
* in bulk with ``keyrunes_django.sync.sync_users`` on all of them.

Prints the wall time and the number of SQL queries of each, and the speed-up,
and exits non-zero if the speed-up is below 10x.

    .venv/bin/python benchmarks/bench_sync_users.py [--users 10000] [--groups 200] [--sample 500]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

import django

django.setup()

from django.contrib.auth.models import Group, User  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import override_settings  # noqa: E402

from keyrunes_django.mapping import get_mapper  # noqa: E402
from keyrunes_django.models import KeyrunesIdentity  # noqa: E402
from keyrunes_django.schemas import AdminUser  # noqa: E402
from keyrunes_django.sync import sync_users  # noqa: E402

REQUIRED_SPEEDUP = 10.0


@contextmanager
def count_queries() -> Iterator[list[int]]:
    """Count SQL statements cheaply (no SQL text kept, unlike CaptureQueriesContext)."""
    counter = [0]

    def wrapper(
        execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any
    ) -> Any:
        counter[0] += 1
        return execute(sql, params, many, context)

    with connection.execute_wrapper(wrapper):
        yield counter


def listing(users: int, groups: int) -> list[AdminUser]:
    """Remote users: each in ``users`` plus two of ``groups`` named groups."""
    return [
        AdminUser(
            user_id=i,
            external_id=f"00000000-0000-4000-8000-{i:012d}",
            email=f"user{i}@example.com",
            username=f"user{i}",
            groups=["users", f"group{i % groups}", f"group{(i * 7 + 3) % groups}"],
        )
        for i in range(1, users + 1)
    ]


def clear() -> None:
    KeyrunesIdentity.objects.all().delete()
    User.objects.all().delete()
    Group.objects.all().delete()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--groups", type=int, default=200)
    parser.add_argument("--sample", type=int, default=500, help="users mirrored one by one")
    args = parser.parse_args()

    call_command("migrate", run_syncdb=True, verbosity=0)
    remote = listing(args.users, args.groups)
    sample = min(args.sample, args.users)

    with override_settings(KEYRUNES={"BASE_URL": "http://127.0.0.1:9", "NAMESPACE": "public"}):
        mapper = get_mapper()
        identities = [user.to_identity("public", 1) for user in remote[:sample]]
        with count_queries() as single_queries:
            started = time.perf_counter()
            for identity in identities:
                mapper.mirror(identity)
            single_time = time.perf_counter() - started
        single_per_user = single_time / sample
        single_extrapolated = single_per_user * args.users
        single_queries_extrapolated = single_queries[0] / sample * args.users
        clear()

        with count_queries() as bulk_queries:
            started = time.perf_counter()
            report = sync_users(remote, namespace="public", organization_id=1, max_shrink=None)
            bulk_time = time.perf_counter() - started
        assert report.created == args.users, report.summary()
        assert Group.objects.count() == args.groups + 1

        with count_queries() as resync_queries:
            started = time.perf_counter()
            again = sync_users(remote, namespace="public", organization_id=1)
            resync_time = time.perf_counter() - started
        assert again.unchanged == args.users, again.summary()

    speedup = single_extrapolated / bulk_time
    print(f"sync benchmark: {args.users} users, {args.groups} groups (+ 'users'), SQLite in memory")
    print(
        f"  one by one (mapper.mirror): {sample} users measured in {single_time:.2f} s "
        f"({single_per_user * 1000:.2f} ms/user, {single_queries[0] / sample:.1f} queries/user)"
    )
    print(
        f"    extrapolated to {args.users} users: {single_extrapolated:.1f} s, "
        f"~{single_queries_extrapolated:,.0f} queries"
    )
    print(f"  bulk (sync_users):          {bulk_time:.2f} s, {bulk_queries[0]} queries")
    print(f"  bulk re-sync, no changes:   {resync_time:.2f} s, {resync_queries[0]} queries")
    print(f"  speed-up: {speedup:.1f}x (required >= {REQUIRED_SPEEDUP:.0f}x)")
    if speedup < REQUIRED_SPEEDUP:
        print("FAIL: bulk sync is not fast enough", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

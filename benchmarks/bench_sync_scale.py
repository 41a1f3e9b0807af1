"""Benchmark: the streamed user sync at growing sizes (time, queries, peak memory).

Each size runs in its own process on an empty database (a SQLite file, or
PostgreSQL with ``KEYRUNES_TEST_DATABASE=postgres``): a full sync whose listing
is produced lazily as a JSON byte stream (never held whole), read by
``KeyrunesClient.iter_users`` (ijson, chunk by chunk) and applied by
``sync_users`` in chunks; then the same listing again (no changes). Printed per
size: wall time, SQL statements, and the growth of the process's peak resident
memory during the two syncs; for comparison, the memory growth of parsing the
same body whole, as a list, the way the listing was read before streaming.

Ratios between the largest and the smallest size are printed at the end; the
run fails (exit 1) when time per user grows by more than 1.5x, queries per user
by more than 1.2x, or the peak memory growth by more than a third of the growth
in users (the set of remote ids seen is the one thing that grows with the
listing, by design: deactivating missing users needs it).

    .venv/bin/python benchmarks/bench_sync_scale.py                     # 10k, 50k, 100k users
    .venv/bin/python benchmarks/bench_sync_scale.py --sizes 2000 10000  # what `make bench` runs
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

import django

django.setup()

import requests  # noqa: E402
from django.contrib.auth.models import Group, User  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import override_settings  # noqa: E402
from pydantic import TypeAdapter  # noqa: E402

from keyrunes_django.client import KeyrunesClient  # noqa: E402
from keyrunes_django.models import KeyrunesIdentity  # noqa: E402
from keyrunes_django.schemas import AdminUser  # noqa: E402
from keyrunes_django.sync import sync_users  # noqa: E402

GROUPS = 200
MAX_TIME_GROWTH = 1.5
MAX_QUERY_GROWTH = 1.2
MAX_MEMORY_SHARE = 1 / 3  # of the growth in users


def user_json(i: int) -> bytes:
    return json.dumps(
        {
            "user_id": i,
            "external_id": f"00000000-0000-4000-8000-{i:012d}",
            "email": f"user{i}@example.com",
            "username": f"user{i}",
            "first_login": False,
            "groups": ["users", f"group{i % GROUPS}", f"group{(i * 7 + 3) % GROUPS}"],
            "created_at": "2026-01-01T00:00:00Z",
        }
    ).encode()


class LazyBody(io.RawIOBase):
    """A JSON array of ``users`` users, generated as it is read."""

    def __init__(self, users: int) -> None:
        self.parts = self._parts(users)
        self.buffer = b""

    @staticmethod
    def _parts(users: int) -> Iterator[bytes]:
        yield b"["
        for i in range(1, users + 1):
            yield (b"," if i > 1 else b"") + user_json(i)
        yield b"]"

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if size < 0:
            return self.buffer + b"".join(self.parts)
        while len(self.buffer) < size:
            part = next(self.parts, None)
            if part is None:
                break
            self.buffer += part
        chunk, self.buffer = self.buffer[:size], self.buffer[size:]
        return chunk


def streamed_client(users: int) -> KeyrunesClient:
    """A client whose user listing is a lazily generated body of ``users`` users."""
    client = KeyrunesClient("http://127.0.0.1:9")

    def answer(*args: Any, **kwargs: Any) -> requests.Response:
        response = requests.Response()
        response.status_code = 200
        response.raw = LazyBody(users)
        response.request = requests.Request("GET", "http://127.0.0.1:9/api/admin/users").prepare()
        return response

    client.request = answer  # type: ignore[method-assign]
    return client


def rss_mib() -> float:
    """Current resident memory of this process."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@contextmanager
def counted() -> Iterator[list[int]]:
    counter = [0]

    def wrapper(
        execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any
    ) -> Any:
        counter[0] += 1
        return execute(sql, params, many, context)

    with connection.execute_wrapper(wrapper):
        yield counter


def sync(users: int, **options: Any) -> tuple[float, int, Any]:
    with counted() as queries:
        started = time.perf_counter()
        report = sync_users(
            streamed_client(users).iter_users("token", 1),
            namespace="public",
            organization_id=1,
            on_item=lambda line: None,
            **options,
        )
        seconds = time.perf_counter() - started
    return seconds, queries[0], report


def one_size(users: int) -> dict[str, float]:
    """Run in a child process: both syncs of ``users`` users, measured."""
    if connection.vendor == "sqlite":
        # A file, so the database's own pages are not counted as the sync's memory.
        folder = tempfile.mkdtemp()
        connection.settings_dict["NAME"] = os.path.join(folder, "bench.sqlite3")
    call_command("migrate", run_syncdb=True, verbosity=0)
    if connection.vendor == "sqlite":
        with connection.cursor() as cursor:
            # A small fixed page cache (2 MiB, the same for every size; the OS caches
            # the file) and no fsync: a benchmark.
            cursor.execute("PRAGMA cache_size = -2048")
            cursor.execute("PRAGMA synchronous = OFF")
    clear()
    gc.collect()
    baseline = rss_mib()
    seconds, queries, report = sync(users, max_shrink=None)
    assert report.created == users, report.summary()
    resync_seconds, resync_queries, report = sync(users)
    assert report.unchanged == users, report.summary()
    peak = peak_rss_mib() - baseline
    clear()
    return {
        "users": users,
        "seconds": seconds,
        "queries": queries,
        "resync_seconds": resync_seconds,
        "resync_queries": resync_queries,
        "peak_mb": peak,
    }


def whole_listing(users: int) -> dict[str, float]:
    """Run in a child process: memory growth of reading the listing whole."""
    gc.collect()
    baseline = rss_mib()
    body = LazyBody(users).read()
    listing = TypeAdapter(list[AdminUser]).validate_python(json.loads(body))
    assert len(listing) == users
    return {"whole_mb": peak_rss_mib() - baseline}


def child(flag: str, users: int) -> dict[str, float]:
    result = subprocess.run(
        [sys.executable, __file__, flag, str(users)],
        capture_output=True,
        text=True,
        check=True,
    )
    row: dict[str, float] = json.loads(result.stdout.strip().splitlines()[-1])
    return row


def clear() -> None:
    KeyrunesIdentity.objects.all().delete()
    User.objects.all().delete()
    Group.objects.all().delete()


def report(rows: list[dict[str, float]]) -> int:
    print(
        f"streamed sync: {connection.vendor}, {GROUPS} groups (+ 'users'), one process per size, "
        "listing generated lazily and parsed with ijson"
    )
    print(
        f"  {'users':>8} {'time s':>8} {'ms/user':>8} {'queries':>8} {'re-sync s':>10} "
        f"{'queries':>8} {'peak MiB':>9} {'whole-list MiB':>15}"
    )
    for row in rows:
        print(
            f"  {row['users']:>8,.0f} {row['seconds']:>8.2f} "
            f"{1000 * row['seconds'] / row['users']:>8.3f} {row['queries']:>8,.0f} "
            f"{row['resync_seconds']:>10.2f} {row['resync_queries']:>8,.0f} "
            f"{row['peak_mb']:>9.1f} {row['whole_mb']:>15.1f}"
        )
    small, large = rows[0], rows[-1]
    growth = large["users"] / small["users"]
    time_growth = (large["seconds"] / large["users"]) / (small["seconds"] / small["users"])
    query_growth = (large["queries"] / large["users"]) / (small["queries"] / small["users"])
    memory_growth = large["peak_mb"] / max(small["peak_mb"], 1.0)
    whole_growth = large["whole_mb"] / max(small["whole_mb"], 1.0)
    print(f"  {growth:.0f}x the users ({small['users']:,.0f} -> {large['users']:,.0f}):")
    print(f"    time per user:    {time_growth:.2f}x (linear time: <= {MAX_TIME_GROWTH}x)")
    print(f"    queries per user: {query_growth:.2f}x (<= {MAX_QUERY_GROWTH}x)")
    print(
        f"    peak memory:      {memory_growth:.2f}x (<= {growth * MAX_MEMORY_SHARE:.1f}x); "
        f"the listing held whole grows {whole_growth:.1f}x"
    )
    print(
        f"    at {large['users']:,.0f} users the streamed sync peaks at "
        f"{large['peak_mb'] / large['whole_mb']:.2f}x the memory of the listing held whole"
    )
    if (
        time_growth > MAX_TIME_GROWTH
        or query_growth > MAX_QUERY_GROWTH
        or memory_growth > growth * MAX_MEMORY_SHARE
    ):
        print("FAIL: the sync does not scale linearly with flat memory", file=sys.stderr)
        return 1
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 50_000, 100_000])
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--whole", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one or args.whole:
        with override_settings(KEYRUNES={"BASE_URL": "http://127.0.0.1:9", "NAMESPACE": "public"}):
            row = one_size(args.one) if args.one else whole_listing(args.whole)
        print(json.dumps(row))
        return 0
    rows = []
    for users in sorted(args.sizes):
        rows.append({**child("--one", users), **child("--whole", users)})
    return report(rows)


if __name__ == "__main__":
    sys.exit(main())

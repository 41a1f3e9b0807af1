"""A bounded HTTP/1.1 load generator (asyncio, keep-alive when the server allows it).

Run as a process of its own so its CPU use never shares a GIL with the
Keyrunes emulator the harness hosts::

    python loadgen.py SPEC.json  ->  one JSON object on stdout

The spec names the target (``host``, ``port``, ``path``), ``concurrency``
connections, a ``duration`` in seconds and a ``max_requests`` budget (the run
stops at whichever comes first; requests in flight then get up to ``timeout``
seconds more), and ``pools`` of ``Authorization`` values::

    {"name": "known", "headers": [...], "pick": "hot" | "zipf" | "unique", "weight": 0.9}

``zipf`` draws index ``k`` with probability proportional to ``1 / (k + 1)``;
``unique`` hands each header out once (a cold token), and the pool drops out
when it runs dry. A pool with ``"rate": R`` is open-loop instead: it takes no
turn on the shared connections, and R requests a second are sent whatever
the server's pace, each on a connection of its own (at most 64 in flight;
an arrival past that is counted as ``skipped``). Results are kept per pool:
status counts, latency percentiles, requests completed inside the window,
distinct headers used.

With ``arms`` (a list of ``{"name", "path", "pools"}``) instead of ``path``
and ``pools``, the paths take turns on the same connections in slices of
``slice`` seconds, shuffled each cycle, ``duration`` seconds each: variants
compared this way see the same machine load.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import json
import random
import sys
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Pool:
    name: str
    headers: list[str]
    pick: str
    weight: float
    rate: float | None = None  # open loop: requests a second, off the shared connections
    cumulative: list[float] = field(default_factory=list)
    cursor: int = 0
    used: set[int] = field(default_factory=set)
    statuses: dict[str, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    in_window: int = 0

    def __post_init__(self) -> None:
        if self.pick == "zipf":
            self.cumulative = list(
                itertools.accumulate(1.0 / (k + 1) for k in range(len(self.headers)))
            )

    @property
    def dry(self) -> bool:
        return self.pick == "unique" and self.cursor >= len(self.headers)

    def draw(self, rng: random.Random) -> str:
        if self.pick == "hot":
            index = 0
        elif self.pick == "zipf":
            index = bisect.bisect_left(self.cumulative, rng.random() * self.cumulative[-1])
        else:
            index = self.cursor
            self.cursor += 1
        self.used.add(index)
        return self.headers[index]


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def read_chunked(reader: asyncio.StreamReader) -> None:
    """Consume a chunked body (ASGI servers send one when the app sets no length)."""
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        await reader.readexactly(size + 2)
        if size == 0:
            return


#: Open-loop requests of one pool in flight at once, at most.
PACED_IN_FLIGHT = 64


class Run:
    """Requests to one path from its pools; connections are handed in by the caller."""

    def __init__(
        self, spec: dict[str, Any], path: str, pools: list[dict[str, Any]], rng: random.Random
    ) -> None:
        self.spec = spec
        self.path = path
        self.pools = [
            Pool(
                p["name"],
                p["headers"],
                p["pick"],
                float(p.get("weight", 1)),
                rate=float(p["rate"]) if "rate" in p else None,
            )
            for p in pools
        ]
        self.rng = rng
        self.issued = 0
        self.active = 0.0  # seconds this run had the connections
        self.slices: list[tuple[int, float]] = []  # (requests, seconds) of each of its turns

    def next_pool(self) -> Pool | None:
        live = [p for p in self.pools if not p.dry and p.weight > 0 and p.rate is None]
        if not live:
            return None
        return self.rng.choices(live, weights=[p.weight for p in live])[0]

    def request_bytes(self, header: str | None) -> bytes:
        lines = [f"GET {self.path} HTTP/1.1", f"Host: {self.spec['host']}"]
        if header is not None:
            lines.append(f"Authorization: {header}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    async def one(self, conn: list[Any], header: str | None) -> tuple[str, bool]:
        """One request on ``conn`` ([reader, writer] or empty): (status, keep the connection)."""
        if not conn:
            reader, writer = await asyncio.open_connection(self.spec["host"], self.spec["port"])
            conn[:] = [reader, writer]
        reader, writer = conn
        writer.write(self.request_bytes(header))
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        status = status_line.split(" ", 2)[1]
        length = 0
        chunked = False
        keep = True
        for line in header_lines:
            name, _, value = line.partition(":")
            name, value = name.strip().lower(), value.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "transfer-encoding":
                chunked = "chunked" in value
            elif name == "connection" and value == "close":
                keep = False
        if chunked:
            await read_chunked(reader)
        elif length:
            await reader.readexactly(length)
        return status, keep

    async def worker(self, conn: list[Any], until: float) -> None:
        """Requests on one connection until ``until`` (then the one in flight finishes)."""
        while time.monotonic() < until and self.issued < self.spec["max_requests"]:
            pool = self.next_pool()
            if pool is None:
                break
            await self.request(conn, pool, until)

    async def request(self, conn: list[Any], pool: Pool, until: float) -> None:
        """One request from ``pool`` on ``conn``, recorded in the pool."""
        timeout = float(self.spec.get("timeout", 60))
        self.issued += 1
        header = pool.draw(self.rng)
        began = time.monotonic()
        keep = False
        try:
            status, keep = await asyncio.wait_for(self.one(conn, header or None), timeout)
        except asyncio.TimeoutError:
            status = "timeout"
        except (
            OSError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            IndexError,
            ValueError,
        ):
            status = "conn_error"
        done = time.monotonic()
        pool.statuses[status] = pool.statuses.get(status, 0) + 1
        pool.latencies.append(done - began)
        if done <= until:
            pool.in_window += 1
        if not keep and conn:
            conn[1].close()
            conn.clear()
            if status == "conn_error":
                await asyncio.sleep(0.01)  # a refused connect must not spin

    async def paced(self, pool: Pool, rate: float, until: float) -> None:
        """Open loop: ``rate`` requests a second from ``pool``, each on its own connection."""
        in_flight: set[asyncio.Task[None]] = set()
        due = time.monotonic()
        while due < until and not pool.dry and self.issued < self.spec["max_requests"]:
            if len(in_flight) < PACED_IN_FLIGHT:
                conn: list[Any] = []
                task = asyncio.create_task(self._one_off(conn, pool, until))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
            else:
                pool.statuses["skipped"] = pool.statuses.get("skipped", 0) + 1
            due += 1.0 / rate
            await asyncio.sleep(max(0.0, due - time.monotonic()))
        await asyncio.gather(*in_flight)

    async def _one_off(self, conn: list[Any], pool: Pool, until: float) -> None:
        await self.request(conn, pool, until)
        close_all([conn])

    def stats(self, window: float, barrier: bool) -> dict[str, Any]:
        """Per pool; with ``barrier`` every request counts (each finished inside its slice)."""
        return {
            p.name: {
                "requests": len(p.latencies),
                "in_window": p.in_window,
                "rps": (len(p.latencies) if barrier else p.in_window) / window
                if window > 0
                else 0.0,
                "statuses": p.statuses,
                "p50": percentile(p.latencies, 0.50),
                "p99": percentile(p.latencies, 0.99),
                "max": max(p.latencies) if p.latencies else None,
                "distinct": len(p.used),
            }
            for p in self.pools
        }


def close_all(conns: list[list[Any]]) -> None:
    for conn in conns:
        if conn:
            conn[1].close()


async def single(spec: dict[str, Any]) -> dict[str, Any]:
    """One path for ``duration`` seconds; throughput counts what finished inside the window."""
    run = Run(spec, spec["path"], spec["pools"], random.Random(spec.get("seed", 1)))
    conns: list[list[Any]] = [[] for _ in range(int(spec["concurrency"]))]
    started = time.monotonic()
    until = started + float(spec["duration"])
    paced = [run.paced(p, p.rate, until) for p in run.pools if p.rate is not None]
    await asyncio.gather(*(run.worker(conn, until) for conn in conns), *paced)
    finished = time.monotonic()
    close_all(conns)
    window = min(finished, until) - started
    return {"window": window, "elapsed": finished - started, "pools": run.stats(window, False)}


async def interleaved(spec: dict[str, Any]) -> dict[str, Any]:
    """Several paths taking turns in short slices (shuffled each cycle), ``duration`` each.

    Every slice ends when its last request has finished, and that time is the
    path's: a change in machine load hits every path alike.
    """
    rng = random.Random(spec.get("seed", 1))
    runs = [Run(spec, arm["path"], arm["pools"], rng) for arm in spec["arms"]]
    conns: list[list[Any]] = [[] for _ in range(int(spec["concurrency"]))]
    width = float(spec["slice"])
    started = time.monotonic()
    for _ in range(max(1, round(float(spec["duration"]) / width))):
        order = list(range(len(runs)))
        rng.shuffle(order)
        for index in order:
            run = runs[index]
            began, issued = time.monotonic(), run.issued
            await asyncio.gather(*(run.worker(conn, began + width) for conn in conns))
            took = time.monotonic() - began
            run.active += took
            run.slices.append((run.issued - issued, took))
    close_all(conns)
    return {
        "elapsed": time.monotonic() - started,
        "arms": {
            arm["name"]: {**run.stats(run.active, True)["main"], "slices": run.slices}
            for arm, run in zip(spec["arms"], runs, strict=True)
        },
    }


def main() -> None:
    with open(sys.argv[1], encoding="utf-8") as fh:
        spec = json.load(fh)
    print(json.dumps(asyncio.run(interleaved(spec) if "arms" in spec else single(spec))))


if __name__ == "__main__":
    main()

"""The scenarios of the server benchmarks and the figures they print.

One run measures, side by side: the warm path of every variant, the cold
path, remote calls per token, an outage and a slow Keyrunes, and the memory
curve; every figure is a ratio against a measurement taken in the same run.
"""

from __future__ import annotations

import random
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

from infra import Server, Services, run_arms, run_load

from keyrunes_django.testing import KeyrunesEmulator

SECRET = "bench-jwt-secret-" + "s" * 40
#: The other authentication schemes compared with Keyrunes.
PEERS = ("simplejwt", "oidc")
TOKENS = 1000
ME = "/api/me"


@dataclass
class Plan:
    """How long and how much: the short plan (``make bench``) or the full one."""

    full: bool
    servers: tuple[str, ...] = ("gunicorn", "uvicorn")
    rounds: int = 1
    warm_seconds: float = 3.2  # Keyrunes and the open view, each, in slices taking turns
    # The peers (simplejwt, OIDC) and their open view, each: their ratios sit
    # far from any target, so they get the shorter turn.
    peer_seconds: float = 1.0
    cold_seconds: float = 1.6  # the cold path and its open view, each
    fault_seconds: float = 4.0  # the phases before and after a fault
    # Long against the outage's onset: until the breaker opens (5 failures), a
    # new token's call still retries with back-off, holding a sync worker ~1 s.
    outage_seconds: float = 10.0
    # Long against the call deadline (5 s by default): as the slowness starts,
    # both sync workers take new tokens and wait out that deadline once before
    # the breaker opens, serving no known token meanwhile.
    slow_seconds: float = 30.0
    slow_delay: float = 12.0
    memory_points: tuple[int, ...] = (0, 1000, 3000)
    #: How many times warm-up sends each known token (both workers should see most).
    warm_up_passes: int = 1

    @classmethod
    def make(cls, full: bool) -> Plan:
        if not full:
            return cls(full=False)
        return cls(
            full=True,
            rounds=3,
            warm_seconds=6.0,
            peer_seconds=6.0,
            cold_seconds=6.0,
            fault_seconds=15.0,
            outage_seconds=15.0,
            slow_seconds=30.0,
            memory_points=(0, 1000, 10_000),
            warm_up_passes=4,
        )


def send_each(server: Server, headers: list[str]) -> None:
    """Each header once to the Keyrunes view, 8 connections."""
    run_load(
        server,
        "/keyrunes/",
        [{"name": "w", "headers": headers, "pick": "unique"}],
        concurrency=8,
        duration=120,
        max_requests=len(headers),
    )


#: Seconds of known tokens alone before a fault scenario, to set the new tokens' rate.
CALIBRATION_SECONDS = 2.0
#: Share of the fault scenarios' requests that carry a never-seen token, at the
#: pace known tokens alone reach. A token lives an hour and serves many requests;
#: a cold request also costs about ten warm ones, so a tenth of the traffic would
#: spend most of the server on it and leave a baseline that swings by 10x.
NEW_TOKEN_SHARE = 0.02


@dataclass
class Bench:
    #: Known tokens of the fault scenarios (Zipf over these, warmed once each).
    fault_tokens = 200

    plan: Plan
    services: Services
    emulator: KeyrunesEmulator
    oidc_url: str
    simplejwt_headers: list[str]
    results: dict[str, Any] = field(default_factory=dict)
    cold_serial: int = 0

    def __post_init__(self) -> None:
        self.users = [self.emulator.create_user() for _ in range(TOKENS)]
        self.known = ["Bearer " + self.emulator.issue_token(u) for u in self.users]
        self.oidc_headers = [f"Bearer oidc-{i}" for i in range(TOKENS)]
        # Fresh tokens count issue times down from here: (user, iat) never repeats.
        self.fresh_base = int(time.time())

    # ------------------------------------------------------------------ helpers

    def fresh_tokens(self, n: int) -> list[str]:
        """Tokens never seen before, of the known users (distinct issue times)."""
        out = []
        for _ in range(n):
            self.cold_serial += 1
            user = self.users[self.cold_serial % TOKENS]
            issued = self.fresh_base - 1 - self.cold_serial // TOKENS
            out.append("Bearer " + self.emulator.issue_token(user, issued_at=issued))
        return out

    def server(self, kind: str, mode: str, workers: int = 2, **keyrunes: Any) -> Server:
        import json

        self.services.flush_cache()
        env = {
            **self.services.env(),
            "BENCH_KEYRUNES_URL": self.emulator.base_url,
            "BENCH_KEYRUNES_MODE": mode,
            "BENCH_JWT_SECRET": SECRET,
            "BENCH_OIDC_URL": self.oidc_url,
            "BENCH_KEYRUNES": json.dumps(keyrunes),
        }
        return Server(kind, env, workers=workers).start()

    def warm_up(
        self, server: Server, keyrunes: bool = True, peers: bool = False, passes: int = 0
    ) -> None:
        """Every known token through the server a few times, so each worker has seen most."""
        headers = self.known[: self.fault_tokens] if passes == 0 else self.known * passes
        random.Random(7).shuffle(headers)
        run_load(
            server,
            "/open/",
            [{"name": "w", "headers": [""], "pick": "hot"}],
            concurrency=8,
            duration=1.0,
            max_requests=400,
        )
        if keyrunes:
            send_each(server, headers)
            self.fill_every_worker(server, sorted(set(headers)))
        if peers:
            for path, pool in (
                ("/simplejwt/", self.simplejwt_headers),
                ("/oidc/", self.oidc_headers),
            ):
                run_load(
                    server,
                    path,
                    [{"name": "w", "headers": pool, "pick": "zipf"}],
                    concurrency=8,
                    duration=1.0,
                    max_requests=2000,
                )

    def fill_every_worker(self, server: Server, known: list[str], rounds: int = 12) -> None:
        """Send the tokens some worker lacks until every worker remembers every one.

        Which worker takes a request is the kernel's choice, so one pass leaves
        each worker a share of tokens it never saw; those would be cold
        requests inside the warm figures. Each round asks every worker which
        tokens it holds and sends only the missing ones (twice each).
        """
        from keyrunes_django.cache import credential_hash

        by_digest = {credential_hash(h.removeprefix("Bearer ")): h for h in known}
        for round_no in range(rounds):
            held = self.held_tokens(server)
            missing = [
                header
                for digest, header in by_digest.items()
                if any(digest not in tokens for tokens in held.values())
            ]
            if not missing:
                return
            headers = missing * 2
            random.Random(round_no).shuffle(headers)
            send_each(server, headers)

    def held_tokens(self, server: Server) -> dict[int, set[str]]:
        """{worker pid: hashes of the tokens it remembers}, asking until every worker answered."""
        from infra import get_json

        seen: dict[int, set[str]] = {}
        workers = len(server.worker_pids()) or 1
        for _ in range(40):
            stats = get_json(server.url("/bench-stats/?tokens=1"))
            seen[int(stats["pid"])] = set(stats["tokens"])
            if len(seen) >= workers:
                break
        return seen

    def pools_for(self, variant: str, dist: str) -> list[dict[str, Any]]:
        headers = {"simplejwt": self.simplejwt_headers, "oidc": self.oidc_headers}.get(
            variant, self.known
        )
        return [{"name": "main", "headers": headers, "pick": dist}]

    # ---------------------------------------------------------------- warm path

    def warm_matrix(
        self, server: Server, variants: list[str]
    ) -> dict[tuple[int, str, str], list[dict[str, Any]]]:
        """Every (connections, distribution): the variants take turns in short slices.

        Keyrunes takes turns with the open view alone, and the peers with an
        open view of their own (``open-peers``): the peers' heavy requests
        (a query, a userinfo call each) would otherwise weigh on the slices
        that follow theirs, on ASGI servers above all.
        """
        groups = [["open", "keyrunes"], ["open-peers", *(v for v in variants if v in PEERS)]]
        samples: dict[tuple[int, str, str], list[dict[str, Any]]] = {}
        for round_no in range(self.plan.rounds):
            for conns in (8, 32):
                for dist in ("hot", "zipf"):
                    for group in groups:
                        if len(group) < 2:
                            continue
                        out = run_arms(
                            server,
                            [self.arm(v, dist) for v in group],
                            concurrency=conns,
                            seconds=self.plan.peer_seconds
                            if group[0] == "open-peers"
                            else self.plan.warm_seconds,
                            seed=round_no + 1,
                        )
                        for variant in group:
                            samples.setdefault((conns, dist, variant), []).append(out[variant])
        return samples

    def arm(self, variant: str, dist: str) -> dict[str, Any]:
        """One variant of the warm tables as the load generator takes it."""
        path = "/open/" if variant.startswith("open") else f"/{variant}/"
        return {"name": variant, "path": path, "pools": self.pools_for(variant, dist)}

    def cold(self, server: Server) -> dict[int, tuple[dict[str, Any], dict[str, Any]]]:
        """First requests with never-seen tokens vs the open view: 8 connections, and one."""
        out = {}
        for conns in (8, 1):
            arms = [
                {"name": "open", "path": "/open/", "pools": self.pools_for("open", "zipf")},
                {
                    "name": "cold",
                    "path": "/keyrunes/",
                    "pools": [
                        {"name": "main", "headers": self.fresh_tokens(4000), "pick": "unique"}
                    ],
                },
            ]
            result = run_arms(server, arms, concurrency=conns, seconds=self.plan.cold_seconds)
            out[conns] = (result["open"], result["cold"])
        return out

    # ------------------------------------------------------------ remote calls

    def stampede(self, server: Server, tokens: int = 3) -> float:
        """/api/me calls per fresh token when 32 first requests for it arrive at once."""
        calls = []
        for header in self.fresh_tokens(tokens):
            before = self.emulator.requests_to(ME)
            result = run_load(
                server,
                "/keyrunes/",
                [{"name": "main", "headers": [header], "pick": "hot"}],
                concurrency=32,
                duration=10,
                max_requests=32,
            )
            assert result["pools"]["main"]["statuses"].get("200") == 32, result
            calls.append(self.emulator.requests_to(ME) - before)
        return statistics.mean(calls)

    # ------------------------------------------------------------------ faults

    def fault_phase(
        self, server: Server, seconds: float, seed: int, new_rate: float | None = None
    ) -> dict[str, Any]:
        """Known tokens (Zipf) on 8 connections; never-seen tokens at ``new_rate`` a second.

        The never-seen tokens arrive open-loop, each on a connection of its own,
        as other users would: on shared connections a new token waiting for a
        slow Keyrunes would also hold back the known tokens queued behind it in
        the client, which no real client population does. Without ``new_rate``
        only known tokens are sent.
        """
        pools: list[dict[str, Any]] = [
            {"name": "known", "headers": self.known[: self.fault_tokens], "pick": "zipf"}
        ]
        if new_rate is not None:
            pools.append(
                {
                    "name": "new",
                    "headers": self.fresh_tokens(int(new_rate * seconds) + 100),
                    "pick": "unique",
                    "rate": new_rate,
                }
            )
        timeouts = server.worker_timeouts()
        result = run_load(
            server,
            "/keyrunes/",
            pools,
            concurrency=8,
            duration=seconds,
            max_requests=500_000,
            timeout=45,
            seed=seed,
        )
        result["worker_timeouts"] = server.worker_timeouts() - timeouts
        return result

    def fault_scenario(
        self, kind: str, name: str, fault: str, server: Server | None = None, **keyrunes: Any
    ) -> dict[str, Any]:
        """before -> fault (emulator stopped, or slow) -> recovered, on one server.

        A fresh one with ``keyrunes`` settings, or ``server`` (warm, default settings).
        """
        if server is None:
            server = self.server(kind, "remote", **keyrunes)
            self.warm_up(server)
        try:
            if keyrunes.get("CACHE_TTL"):
                time.sleep(float(keyrunes["CACHE_TTL"]))  # every known entry is stale now
            alone = self.fault_phase(server, CALIBRATION_SECONDS, 0)
            known_rps = alone["pools"]["known"]["rps"]
            rate = max(1.0, known_rps * NEW_TOKEN_SHARE / (1 - NEW_TOKEN_SHARE))
            before = self.fault_phase(server, self.plan.fault_seconds, 1, rate)
            if fault == "outage":
                # Dropping every request also ends the keep-alive connections the
                # workers hold (the server's handler threads outlive its stop()).
                self.emulator.faults.add(None, drop=True)
                self.emulator.stop()
                seconds = self.plan.outage_seconds
            else:
                self.emulator.faults.add(r"^/api/me$", delay=self.plan.slow_delay)
                seconds = self.plan.slow_seconds
            try:
                during = self.fault_phase(server, seconds, 2, rate)
            finally:
                self.emulator.faults.clear()
                self.emulator.start()
            after = self.fault_phase(server, self.plan.fault_seconds, 3, rate)
            stats = server.log_text()
        finally:
            server.stop()
        return {
            "name": name,
            "new_rate": rate,
            "new_share": NEW_TOKEN_SHARE,
            "before": before,
            "during": during,
            "after": after,
            "tracebacks": stats.count("Traceback"),
            "log": server.log_path,
        }

    # ------------------------------------------------------------------ memory

    def memory_curve(self) -> list[tuple[int, int, dict[str, Any]]]:
        """RSS of one gunicorn worker (local mode) as distinct tokens fill its cache."""
        server = self.server("gunicorn", "local", workers=1)
        points = []
        try:
            self.warm_up(server, keyrunes=False)
            run_load(
                server,
                "/keyrunes/",
                [{"name": "w", "headers": self.known[:50], "pick": "unique"}],
                concurrency=4,
                duration=30,
                max_requests=50,
            )
            from infra import get_json

            filled = 0
            for target in self.plan.memory_points:
                headers = self.synthetic_tokens(filled, target - filled)
                if headers:
                    result = run_load(
                        server,
                        "/keyrunes/",
                        [{"name": "m", "headers": headers, "pick": "unique"}],
                        concurrency=8,
                        duration=600,
                        max_requests=len(headers),
                    )
                    bad = {k: v for k, v in result["pools"]["m"]["statuses"].items() if k != "200"}
                    if bad:
                        raise RuntimeError(f"memory fill got {bad}")
                filled = target
                stats = get_json(server.url("/bench-stats/"))
                points.append((target, server.worker_rss()[0], stats))
        finally:
            server.stop()
        return points

    def synthetic_tokens(self, start: int, n: int) -> list[str]:
        """Locally verifiable tokens of users Keyrunes never listed (each a new mirror)."""
        import jwt

        now = int(time.time())
        return [
            "Bearer "
            + jwt.encode(
                {
                    "sub": str(900_000 + i),
                    "email": f"m{i}@bench.test",
                    "username": f"mem{i}",
                    "groups": ["users"],
                    "namespace": "public",
                    "organization_id": 1,
                    "iat": now,
                    "exp": now + 3600,
                    "iss": "keyrunes",
                },
                SECRET,
                algorithm="HS256",
            )
            for i in range(start, start + n)
        ]

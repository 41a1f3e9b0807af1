"""keyrunes-django under real servers: gunicorn (2 sync workers) and uvicorn, side by side.

    .venv/bin/python benchmarks/bench_servers.py           # short, about 8 minutes (make bench)
    .venv/bin/python benchmarks/bench_servers.py --full    # longer runs, 3 rounds, 10k memory point

Starts PostgreSQL and Redis with scripts/services.sh (``--pg-port``/``--redis-port``;
SQLite + LocMem with a printed note if they cannot start), the Keyrunes emulator
in this process, a fake OIDC userinfo endpoint, and the bench project of
benchmarks/servers/ under each server. Prints ratios measured in this run;
what each table means is in docs/howto/benchmarks.md. Exit status 0 unless the
harness itself fails (``--strict``: 1 when one of the printed targets fails).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent / "servers"
sys.path.insert(0, str(HERE))

import harness  # noqa: E402
import report  # noqa: E402
from infra import PY, Helper, Services  # noqa: E402

from keyrunes_django.testing import KeyrunesEmulator  # noqa: E402


def prepare_database(services: Services) -> list[str]:
    env = {
        **os.environ,
        **services.env(),
        "DJANGO_SETTINGS_MODULE": "benchproject.settings",
        "BENCH_JWT_SECRET": harness.SECRET,
    }
    done = subprocess.run(
        [PY, str(HERE / "setup_db.py"), str(harness.TOKENS)],
        env=env,
        capture_output=True,
        text=True,
        cwd=str(HERE),
    )
    if done.returncode != 0:
        raise RuntimeError(f"database setup failed:\n{done.stderr[-3000:]}")
    return ["Bearer " + t for t in json.loads(done.stdout)["simplejwt"]]


def per_server(bench: harness.Bench, kind: str, parts: set[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "local" in parts:
        local_mode(bench, kind, out)
    if "remote" in parts:
        remote_mode(bench, kind, out, faults="faults" in parts)
    if "faults" in parts:
        fault_scenarios(bench, kind, out)
    return out


def local_mode(bench: harness.Bench, kind: str, out: dict[str, Any]) -> None:
    step = time.monotonic()
    server = bench.server(kind, "local")
    try:
        bench.warm_up(server, peers=True, passes=bench.plan.warm_up_passes)
        out["local_matrix"] = bench.warm_matrix(server, ["open", "keyrunes", "simplejwt", "oidc"])
        out["local_cold"] = bench.cold(server)
    finally:
        server.stop()
    log(f"{kind}: local mode and peers done ({time.monotonic() - step:.0f} s)")


def remote_mode(bench: harness.Bench, kind: str, out: dict[str, Any], faults: bool) -> None:
    step = time.monotonic()
    bench.emulator.reset_counters()
    server = bench.server(kind, "remote")
    try:
        started = time.monotonic()
        bench.warm_up(server, passes=bench.plan.warm_up_passes)
        out["remote_matrix"] = bench.warm_matrix(server, ["open", "keyrunes"])
        out["calls_per_token"] = bench.emulator.requests_to(harness.ME) / harness.TOKENS
        out["calls_elapsed"] = time.monotonic() - started
        out["stampede"] = bench.stampede(server)
        out["remote_cold"] = bench.cold(server)
        log(f"{kind}: remote mode done ({time.monotonic() - step:.0f} s)")
        if faults:  # on this warm server, with default settings
            out["faults"] = [bench.fault_scenario(kind, "outage, defaults", "outage", server)]
    finally:
        server.stop()


def fault_scenarios(bench: harness.Bench, kind: str, out: dict[str, Any]) -> None:
    scenarios: list[tuple[str, str, dict[str, Any]]] = [
        ("outage, stale entries (CACHE_TTL=5)", "outage", {"CACHE_TTL": 5}),
        (f"slow Keyrunes ({bench.plan.slow_delay:g} s), defaults", "slow", {}),
    ]
    if bench.plan.full:
        scenarios.append(("outage, RETRIES=0", "outage", {"RETRIES": 0}))
        scenarios.append(
            (
                f"slow ({bench.plan.slow_delay:g} s), stale entries (CACHE_TTL=5)",
                "slow",
                {"CACHE_TTL": 5},
            )
        )
    for name, fault, settings in scenarios:
        step = time.monotonic()
        out.setdefault("faults", []).append(bench.fault_scenario(kind, name, fault, **settings))
        log(f"{kind}: {name} done ({time.monotonic() - step:.0f} s)")


#: What one run can measure (``--only``): warm and cold paths in each mode, the
#: Keyrunes outage and slowness scenarios, the per-process memory curve.
PARTS = ("local", "remote", "faults", "memory")


def log(message: str) -> None:
    print(f"[bench_servers] {message}", file=sys.stderr, flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="longer runs, 3 rounds, memory to 10k")
    parser.add_argument("--pg-port", type=int, default=int(os.environ.get("PG_PORT", 54329)))
    parser.add_argument("--redis-port", type=int, default=int(os.environ.get("REDIS_PORT", 63790)))
    parser.add_argument("--servers", default="gunicorn,uvicorn")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target fails")
    parser.add_argument("--rounds", type=int, help="rounds of the warm tables (short: 1)")
    parser.add_argument(
        "--warm-seconds",
        type=float,
        help="seconds per variant and round for Keyrunes and its open view (short: 3.2)",
    )
    parser.add_argument(
        "--slow-seconds", type=float, help="length of the slow-Keyrunes phase (default: 30)"
    )
    parser.add_argument(
        "--only",
        default=",".join(PARTS),
        help=f"comma-separated parts to run (default: all of {','.join(PARTS)})",
    )
    args = parser.parse_args()
    parts = set(args.only.split(","))
    if not parts <= set(PARTS):
        parser.error(f"--only takes {','.join(PARTS)}")
    plan = harness.Plan.make(args.full)
    plan.servers = tuple(args.servers.split(","))
    plan.rounds = args.rounds or plan.rounds
    plan.warm_seconds = args.warm_seconds or plan.warm_seconds
    plan.slow_seconds = args.slow_seconds or plan.slow_seconds
    started = time.monotonic()

    services = Services(args.pg_port, args.redis_port)
    services.start()
    if services.note:
        print(services.note)
    emulator = KeyrunesEmulator(jwt_secret=harness.SECRET).start()
    oidc = Helper([PY, str(HERE / "fake_oidc.py")])
    try:
        bench = harness.Bench(plan, services, emulator, oidc.base_url, prepare_database(services))
        results = {kind: per_server(bench, kind, parts) for kind in plan.servers}
        points = bench.memory_curve() if "memory" in parts else []
        log(f"memory curve done; total {time.monotonic() - started:.0f} s")
    finally:
        oidc.stop()
        emulator.stop()
        services.stop()

    print(
        f"\nkeyrunes-django under real servers ({'full' if plan.full else 'short'} run: "
        f"{plan.rounds} round(s) of {plan.warm_seconds:g} s per variant "
        f"({plan.peer_seconds:g} s for the peers), outage "
        f"{plan.outage_seconds:g} s, slow phase {plan.slow_seconds:g} s; "
        f"{time.monotonic() - started:.0f} s; Python {sys.version.split()[0]}; "
        f"{'PostgreSQL + Redis' if services.available else 'SQLite + LocMem'}; "
        f"load {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs: ratios, not absolute figures)"
    )
    report.warm_table(results)
    report.cold_table(results)
    report.calls_table(results)
    report.faults_table(results)
    report.memory_table(points)
    checks = report.targets(results, points)
    print("\nTargets (informational; --strict makes a failure exit 1):")
    for name, detail, ok in checks:
        print(f"  {'PASS' if ok else 'FAIL'}  {name}: {detail}")
    print("\nNot measured here: the sync at 10k/50k/100k users (benchmarks/bench_sync_scale.py).")
    return 1 if args.strict and not all(ok for _, _, ok in checks) else 0


if __name__ == "__main__":
    sys.exit(main())

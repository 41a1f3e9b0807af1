"""Processes the server benchmarks drive: services, the bench servers, the load generator.

Everything listens on loopback only; every process started here is stopped by
its own id (:meth:`Server.stop`, :meth:`Infra.close`).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
PY = sys.executable


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get_json(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:  # loopback only
        return json.loads(response.read())


def rss_of(pid: int) -> int:
    """Resident set size of a process, in bytes (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, IndexError, ValueError):
        return 0


def children_of(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            found.extend(int(x) for x in task.read_text().split())
        except OSError:
            continue
    return found


@dataclass
class Services:
    """PostgreSQL and Redis from scripts/services.sh, or the SQLite + LocMem fallback."""

    pg_port: int
    redis_port: int
    available: bool = False
    started_here: bool = False
    note: str = ""

    def env(self) -> dict[str, str]:
        if not self.available:
            return {
                "BENCH_SQLITE_PATH": str(Path(tempfile.gettempdir()) / "keyrunes-bench.sqlite3")
            }
        return {
            "BENCH_PG_PORT": str(self.pg_port),
            "BENCH_REDIS_URL": f"redis://127.0.0.1:{self.redis_port}/0",
        }

    def _reachable(self) -> bool:
        try:
            import psycopg
            import redis

            psycopg.connect(
                host="127.0.0.1",
                port=self.pg_port,
                user="postgres",
                dbname="postgres",
                connect_timeout=2,
            ).close()
            redis.Redis(port=self.redis_port, socket_timeout=2).ping()
        except Exception:
            return False
        return True

    def start(self) -> None:
        if not self._reachable():
            env = {**os.environ, "PG_PORT": str(self.pg_port), "REDIS_PORT": str(self.redis_port)}
            run = subprocess.run(
                ["bash", str(ROOT / "scripts/services.sh"), "start"],
                env=env,
                capture_output=True,
                text=True,
            )
            self.started_here = run.returncode == 0
            if not self.started_here or not self._reachable():
                self.note = (
                    "NOTE: PostgreSQL/Redis could not be started "
                    f"({(run.stderr or run.stdout).strip()[:200]}); falling back to SQLite + "
                    "a per-process LocMem cache: no cache is shared by the workers, so remote "
                    "calls and single-flight are per worker and the figures are not comparable."
                )
                return
        self.available = True
        self._create_database()

    def _create_database(self) -> None:
        import psycopg

        with psycopg.connect(
            host="127.0.0.1", port=self.pg_port, user="postgres", dbname="postgres", autocommit=True
        ) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = 'keyrunes_bench'"
            ).fetchone()
            if not exists:
                conn.execute("CREATE DATABASE keyrunes_bench")

    def flush_cache(self) -> None:
        if self.available:
            import redis

            redis.Redis(port=self.redis_port).flushdb()

    def stop(self) -> None:
        if self.started_here:
            env = {**os.environ, "PG_PORT": str(self.pg_port), "REDIS_PORT": str(self.redis_port)}
            subprocess.run(
                ["bash", str(ROOT / "scripts/services.sh"), "stop"], env=env, capture_output=True
            )


@dataclass
class Server:
    """One gunicorn (2 sync workers) or uvicorn server of the bench project."""

    kind: str  # "gunicorn" | "uvicorn"
    env: dict[str, str]
    workers: int = 2
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path = field(
        default_factory=lambda: Path(tempfile.mkstemp(prefix="bench-server-", suffix=".log")[1])
    )

    def command(self) -> list[str]:
        bind = ["127.0.0.1", str(self.port)]
        if self.kind == "gunicorn":
            return [
                PY,
                "-m",
                "gunicorn",
                "--chdir",
                str(HERE),
                "-w",
                str(self.workers),
                "-b",
                ":".join(bind),
                "--timeout",
                "30",
                "--graceful-timeout",
                "3",
                "--backlog",
                "512",
                "benchproject.wsgi:application",
            ]
        return [
            PY,
            "-m",
            "uvicorn",
            "--app-dir",
            str(HERE),
            "--host",
            bind[0],
            "--port",
            bind[1],
            "--workers",
            str(self.workers),
            "--no-access-log",
            "--log-level",
            "warning",
            "--backlog",
            "512",
            "benchproject.asgi:application",
        ]

    def start(self) -> Server:
        self.port = free_port()
        env = {**os.environ, **self.env, "DJANGO_SETTINGS_MODULE": "benchproject.settings"}
        if self.kind == "uvicorn":
            env["BENCH_DB_POOL"] = "1"
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.command(), env=env, stdout=log, stderr=log, cwd=str(HERE)
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} exited at start:\n{self.log_tail()}")
            try:
                get_json(self.url("/bench-stats/"), timeout=2)
                if len(self.worker_pids()) >= self.workers:
                    return self
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{self.kind} did not answer within 60 s:\n{self.log_tail()}")

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def worker_pids(self) -> list[int]:
        if self.proc is None:
            return []
        pids = children_of(self.proc.pid)
        # uvicorn's spawn start method adds a resource tracker, which serves no request.
        return [
            p for p in pids if b"resource_tracker" not in Path(f"/proc/{p}/cmdline").read_bytes()
        ]

    def worker_rss(self) -> list[int]:
        return [rss_of(pid) for pid in self.worker_pids()]

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def worker_timeouts(self) -> int:
        return self.log_text().count("WORKER TIMEOUT")

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def run_load(
    server: Server,
    path: str,
    pools: list[dict[str, Any]],
    *,
    concurrency: int,
    duration: float,
    max_requests: int,
    timeout: float = 45.0,
    seed: int = 1,
) -> dict[str, Any]:
    """One load-generator process against ``server``; its JSON result."""
    return _loadgen(
        server,
        {
            "path": path,
            "pools": pools,
            "concurrency": concurrency,
            "duration": duration,
            "max_requests": max_requests,
            "timeout": timeout,
            "seed": seed,
        },
    )


def run_arms(
    server: Server,
    arms: list[dict[str, Any]],
    *,
    concurrency: int,
    seconds: float,
    slice_seconds: float = 0.25,
    seed: int = 1,
) -> dict[str, Any]:
    """Several paths taking turns on the same connections; {arm name: stats}."""
    result = _loadgen(
        server,
        {
            "arms": arms,
            "concurrency": concurrency,
            "duration": seconds,
            "slice": slice_seconds,
            "max_requests": 10**7,
            "timeout": 45,
            "seed": seed,
        },
    )
    arms_out: dict[str, Any] = result["arms"]
    return arms_out


def _loadgen(server: Server, spec: dict[str, Any]) -> dict[str, Any]:
    """Run benchmarks/servers/loadgen.py on ``spec`` against ``server``; its JSON result."""
    spec = {"host": "127.0.0.1", "port": server.port, **spec}
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
        json.dump(spec, fh)
    try:
        done = subprocess.run(
            [PY, str(HERE / "loadgen.py"), fh.name],
            capture_output=True,
            text=True,
            timeout=float(spec["duration"]) + float(spec["timeout"]) + 60,
        )
    finally:
        os.unlink(fh.name)
    if done.returncode != 0:
        raise RuntimeError(f"load generator failed: {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


class Helper:
    """A helper process that prints its base URL on its first line (the fake OIDC server)."""

    def __init__(self, argv: list[str]) -> None:
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.base_url = self.proc.stdout.readline().strip()
        if not self.base_url:
            raise RuntimeError(f"{argv} did not start")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

"""The benchmarks keep running: a small size of each script, and the report's arithmetic.

``make bench`` is not part of the test run (it takes minutes and wants quiet
CPUs); these keep its scripts in step with the code they measure.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
SERVERS = ROOT / "benchmarks" / "servers"


def run_script(*argv: str) -> str:
    # On SQLite in a folder of its own, whichever database this test run uses.
    env = {k: v for k, v in os.environ.items() if k != "KEYRUNES_TEST_DATABASE"}
    done = subprocess.run(
        [sys.executable, *argv], capture_output=True, text=True, cwd=str(ROOT), timeout=300, env=env
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


class TestStreamedSyncBenchmark:
    def test_one_size_syncs_every_user_in_few_queries(self) -> None:
        row = json.loads(run_script("benchmarks/bench_sync_scale.py", "--one", "300"))
        assert row["users"] == 300
        assert 0 < row["queries"] < 300  # in chunks, not one query per user
        assert row["resync_queries"] <= row["queries"]

    def test_whole_listing_is_measured(self) -> None:
        row = json.loads(run_script("benchmarks/bench_sync_scale.py", "--whole", "300"))
        assert row["whole_mb"] >= 0


@pytest.fixture
def report(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.syspath_prepend(str(SERVERS))
    import report as module

    return module


def sample(slices: list[tuple[int, float]]) -> dict[str, Any]:
    requests = sum(n for n, _ in slices)
    seconds = sum(s for _, s in slices)
    return {"rps": requests / seconds, "slices": slices}


class TestWarmRatio:
    def test_median_over_cycles_ignores_one_burst(self, report: Any) -> None:
        # Four cycles; in the third, something else took the machine while the
        # variant ran: the whole-run ratio drops, the median of cycles does not.
        variant = sample([(100, 0.25), (100, 0.25), (20, 0.25), (100, 0.25)])
        open_view = sample([(100, 0.25)] * 4)
        samples = {"v": [variant], "o": [open_view]}
        assert report.median_ratio(samples, "v", "o") == pytest.approx(1.0)
        assert variant["rps"] / open_view["rps"] == pytest.approx(0.8)

    def test_cycles_of_every_round_count(self, report: Any) -> None:
        samples = {
            "v": [sample([(90, 0.25)] * 3), sample([(80, 0.25)] * 2)],
            "o": [sample([(100, 0.25)] * 3), sample([(100, 0.25)] * 2)],
        }
        assert report.median_ratio(samples, "v", "o") == pytest.approx(0.9)

    def test_samples_without_slices_use_the_whole_run(self, report: Any) -> None:
        samples = {"v": [{"rps": 50.0}], "o": [{"rps": 100.0}]}
        assert report.median_ratio(samples, "v", "o") == pytest.approx(0.5)


class TestOpenLoopPool:
    """A paced pool keeps its rate whatever the server does with its requests."""

    def run_against(self, tmp_path: Path, slow_header: str) -> dict[str, Any]:
        import threading
        import time
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                if self.headers.get("Authorization") == slow_header:
                    time.sleep(1.0)
                # One write: headers and body apart would wait on delayed ACKs.
                self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

            def log_message(self, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            spec = {
                "host": "127.0.0.1",
                "port": server.server_address[1],
                "path": "/",
                "concurrency": 2,
                "duration": 1.0,
                "max_requests": 100_000,
                "timeout": 5,
                "pools": [
                    {"name": "known", "headers": ["Bearer known"], "pick": "hot"},
                    {
                        "name": "new",
                        "headers": [slow_header] * 100,
                        "pick": "unique",
                        "rate": 20,
                    },
                ],
            }
            path = tmp_path / "spec.json"
            path.write_text(json.dumps(spec))
            out = run_script(str(SERVERS / "loadgen.py"), str(path))
        finally:
            server.shutdown()
            server.server_close()
        return json.loads(out)["pools"]

    def test_slow_arrivals_do_not_hold_the_shared_connections(self, tmp_path: Path) -> None:
        pools = self.run_against(tmp_path, "Bearer new")
        new, known = pools["new"], pools["known"]
        # About 20 arrivals in the second, each waiting 1 s on a connection of its own.
        assert 15 <= new["requests"] <= 25
        assert new["statuses"] == {"200": new["requests"]}
        assert new["p50"] >= 1.0
        # The two shared connections never waited on them.
        assert known["requests"] > 10 * new["requests"]
        assert known["p99"] < 1.0


def test_fault_table_states_the_share_and_cap_it_ran_with(report: Any, capsys: Any) -> None:
    pool = {"rps": 10.0, "statuses": {"200": 5}, "p50": 0.01, "p99": 0.02}
    phase = {"pools": {"known": pool, "new": pool}, "worker_timeouts": 0}
    scenario = {
        "name": "outage",
        "new_rate": 3.0,
        "new_share": 0.05,
        "before": phase,
        "during": phase,
        "after": phase,
        "tracebacks": 0,
        "log": "server.log",
    }
    report.faults_table({"gunicorn": {"faults": [scenario]}})
    header = capsys.readouterr().out
    assert "at 5% of the known tokens' pace" in header
    assert "skipped past 64 in flight" in header

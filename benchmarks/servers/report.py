"""Tables of the server benchmarks: ratios measured in one run, then the figures behind them."""

from __future__ import annotations

import statistics
from typing import Any

Sample = dict[str, Any]


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f}"


def statuses(sample: Sample) -> str:
    """2xx/401/503/500/other counts of one pool."""
    counts = sample["statuses"]
    two = sum(v for k, v in counts.items() if k.startswith("2"))
    other = sum(
        v for k, v in counts.items() if not k.startswith("2") and k not in ("401", "503", "500")
    )
    return f"{two}/{counts.get('401', 0)}/{counts.get('503', 0)}/{counts.get('500', 0)}/{other}"


def errors(samples: list[Sample]) -> int:
    return sum(v for s in samples for k, v in s["statuses"].items() if not k.startswith("2"))


def table(title: str, header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    print(f"\n{title}\n")
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print("| " + " | ".join(str(c).rjust(w) for c, w in zip(row, widths, strict=True)) + " |")


def median_ratio(samples: dict[Any, list[Sample]], key: Any, base: Any) -> float:
    """Median of variant/open throughput over every cycle of every round.

    In each cycle the variants had the connections one after the other, for
    one slice each, so the pair compared is always seconds apart: a burst of
    load elsewhere on the machine moves one cycle's ratio, not the median.
    """
    ratios = []
    for v, o in zip(samples[key], samples[base], strict=True):
        cycles = list(zip(v.get("slices", []), o.get("slices", []), strict=False))
        if not cycles:
            ratios.append(ratio(v["rps"], o["rps"]))
        for (vn, vs), (on, os_) in cycles:
            ratios.append(ratio(vn / vs if vs else 0.0, on / os_ if os_ else 0.0))
    return statistics.median(ratios)


def _cell(samples: dict[Any, list[Sample]], key: Any, base: Any) -> str:
    if key not in samples:
        return "-"
    return f"{median_ratio(samples, key, base):.2f}x"


def warm_table(results: dict[str, Any]) -> None:
    rows = []
    for kind, res in results.items():
        local, remote = res.get("local_matrix", {}), res.get("remote_matrix", {})
        for conns in (8, 32):
            for dist in ("hot", "zipf"):
                base = (conns, dist, "open")
                if base not in local and base not in remote:
                    continue
                peers_base = (conns, dist, "open-peers")
                cells = [_cell(local, (conns, dist, "keyrunes"), base)]
                cells += [_cell(local, (conns, dist, v), peers_base) for v in ("simplejwt", "oidc")]
                cells.insert(1, _cell(remote, (conns, dist, "keyrunes"), base))
                errs = sum(
                    errors(m[(conns, dist, v)])
                    for m in (local, remote)
                    for v in {"open", "open-peers", "keyrunes", "simplejwt", "oidc"}
                    if (conns, dist, v) in m
                )
                open_rps = statistics.median(s["rps"] for s in (local or remote)[base])
                rows.append([kind, str(conns), dist, f"{open_rps:.0f}", *cells, str(errs)])
    table(
        "Warm path: throughput vs the open view on the same server (median of rounds)",
        [
            "server",
            "conns",
            "tokens",
            "open req/s",
            "keyrunes local",
            "keyrunes remote",
            "simplejwt",
            "mozilla-oidc",
            "non-2xx",
        ],
        rows,
    )


def cold_table(results: dict[str, Any]) -> None:
    rows = []
    for kind, res in results.items():
        for mode in ("local", "remote"):
            if f"{mode}_cold" not in res:
                continue
            cold = res[f"{mode}_cold"]
            open8, cold8 = cold[8]
            open1, cold1 = cold[1]
            rows.append(
                [
                    kind,
                    mode,
                    f"{ratio(cold8['rps'], open8['rps']):.2f}x",
                    f"{ratio(cold1['p50'], open1['p50']):.2f}x",
                    ms(cold1["p50"]),
                    ms(open1["p50"]),
                    str(errors([cold8, cold1])),
                ]
            )
    table(
        "Cold path: tokens never seen (returning users) vs the open view",
        [
            "server",
            "mode",
            "req/s ratio (8 conns)",
            "p50 latency ratio (1 conn)",
            "cold p50 ms",
            "open p50 ms",
            "non-2xx",
        ],
        rows,
    )


def calls_table(results: dict[str, Any]) -> None:
    rows = [
        [
            kind,
            f"{res['calls_per_token']:.2f}",
            f"{res['stampede']:.2f}",
            f"{res['calls_elapsed']:.0f} s",
        ]
        for kind, res in results.items()
        if "calls_per_token" in res
    ]
    if not rows:
        return
    table(
        "Remote calls (/api/me on the emulator), remote mode, 2 workers sharing Redis",
        [
            "server",
            "calls per token per TTL (warm-up + warm runs)",
            "calls per fresh token, 32 concurrent first requests",
            "elapsed (TTL 300 s)",
        ],
        rows,
    )


def fault_rows(kind: str, scenario: dict[str, Any]) -> list[list[str]]:
    before, during, after = (scenario[p]["pools"] for p in ("before", "during", "after"))
    known = ratio(during["known"]["rps"], before["known"]["rps"])
    recovered = ratio(after["known"]["rps"], before["known"]["rps"])
    return [
        [
            kind,
            scenario["name"],
            f"{known:.2f}x",
            ms(during["known"]["p50"]),
            ms(during["known"]["p99"]),
            statuses(during["known"]),
            statuses(during["new"]),
            ms(during["new"]["p99"]),
            f"{scenario.get('new_rate', 0):.0f}",
            str(scenario["during"]["worker_timeouts"]),
            f"{recovered:.2f}x",
            str(scenario["tracebacks"]),
        ]
    ]


def faults_table(results: dict[str, Any]) -> None:
    rows = [
        row
        for kind, res in results.items()
        for sc in res.get("faults", [])
        for row in fault_rows(kind, sc)
    ]
    if not rows:
        return
    from loadgen import PACED_IN_FLIGHT

    share = next(sc["new_share"] for res in results.values() for sc in res.get("faults", []))
    table(
        "Keyrunes down or slow, remote mode: known tokens (Zipf over 200) on 8 connections;"
        f" never-seen tokens open-loop,\neach on its own connection, at {share:.0%} of the known"
        " tokens' pace alone (new req/s)\n"
        "(statuses: 2xx/401/503/500/other, other = connection errors, client timeouts and"
        f" arrivals skipped past {PACED_IN_FLIGHT} in flight)",
        [
            "server",
            "scenario",
            "known req/s vs before",
            "known p50 ms",
            "known p99 ms",
            "known statuses",
            "new statuses",
            "new p99 ms",
            "new req/s",
            "worker timeouts",
            "after recovery",
            "tracebacks in log",
        ],
        rows,
    )
    logs = [
        f"{kind} {sc['name']}: {sc['log']}"
        for kind, res in results.items()
        for sc in res.get("faults", [])
        if sc["tracebacks"] or sc["during"]["worker_timeouts"]
    ]
    if logs:
        print("\nServer logs with tracebacks or worker timeouts:\n  " + "\n  ".join(logs))


def memory_table(points: list[tuple[int, int, dict[str, Any]]]) -> None:
    if not points:
        return
    rows = []
    base_tokens, base_rss, _ = points[0]
    prev_tokens, prev_rss = base_tokens, base_rss
    for tokens, rss, stats in points:
        step = ratio(rss - prev_rss, tokens - prev_tokens) if tokens != prev_tokens else None
        total = ratio(rss - base_rss, tokens - base_tokens) if tokens != base_tokens else None
        rows.append(
            [
                f"{tokens:,}",
                f"{rss / 1e6:.1f}",
                str(stats["verification_entries"]),
                str(stats["user_entries"]),
                "-" if step is None else f"{step:,.0f}",
                "-" if total is None else f"{total:,.0f}",
            ]
        )
        prev_tokens, prev_rss = tokens, rss
    table(
        "Memory: one gunicorn worker, local mode, LOCAL_CACHE_SIZE=10,000 (distinct users)",
        [
            "cached tokens",
            "worker RSS MB",
            "verification entries",
            "user entries",
            "bytes/entry (this step)",
            "bytes/entry (from 0)",
        ],
        rows,
    )


def targets(
    results: dict[str, Any], points: list[tuple[int, int, dict[str, Any]]]
) -> list[tuple[str, str, bool]]:
    """What the app promises under real servers, as PASS/FAIL lines (informational)."""
    checks = []
    for kind, res in results.items():
        for sc in res.get("faults", []):
            during = sc["during"]["pools"]
            known = ratio(during["known"]["rps"], sc["before"]["pools"]["known"]["rps"])
            fives = sum(during[p]["statuses"].get("500", 0) for p in ("known", "new"))
            new_p99 = during["new"]["p99"] or 0.0
            checks.append(
                (
                    f"{kind} {sc['name']}: no 500s, no worker timeouts",
                    f"{fives} x 500, {sc['during']['worker_timeouts']} timeouts",
                    fives == 0 and sc["during"]["worker_timeouts"] == 0,
                )
            )
            checks.append(
                (f"{kind} {sc['name']}: known tokens >= 0.8x", f"{known:.2f}x", known >= 0.8)
            )
            checks.append(
                (
                    f"{kind} {sc['name']}: new tokens answered within the deadline",
                    f"p99 {ms(new_p99)} ms (DEADLINE 5 s)",
                    new_p99 <= 5.5,
                )
            )
        for conns in (8, 32):
            for dist in ("hot", "zipf"):
                base = (conns, dist, "open")
                found = {
                    mode: median_ratio(res[f"{mode}_matrix"], (conns, dist, "keyrunes"), base)
                    for mode in ("local", "remote")
                    if f"{mode}_matrix" in res
                }
                if found:
                    checks.append(
                        (
                            f"{kind} warm {conns} conns {dist}: >= 0.95x the open view",
                            ", ".join(f"{mode} {r:.2f}x" for mode, r in found.items()),
                            min(found.values()) >= 0.95,
                        )
                    )
        if "local_cold" in res:
            one_conn = res["local_cold"][1]
            lat = ratio(one_conn[1]["p50"], one_conn[0]["p50"])
            checks.append((f"{kind} cold local p50 <= 3x the open view", f"{lat:.2f}x", lat <= 3.0))
    if len(points) > 2:
        # Per entry is what each further token adds: from the first filled point
        # on, past one-off growth (imports, connection and statement caches).
        tokens, rss, _ = points[-1]
        per = ratio(rss - points[1][1], tokens - points[1][0])
        checks.append(
            (
                "per-process cache <= 1.5 KB per entry",
                f"{per:,.0f} B per token from {points[1][0]:,} to {tokens:,} tokens",
                per <= 1536,
            )
        )
    return checks

"""Per-request cost of Keyrunes request authentication, against no auth and simplejwt.

Run with ``make bench`` (``scripts/bench.sh``). One process, one machine:

* the same trivial DRF view (``APIView`` returning ``{"ok": true}``) is called
  through ``RequestFactory`` + the view, a fresh request each time, with
  (a) no authentication, (b) keyrunes local mode, warm, (c) keyrunes remote
  mode, warm, (d) keyrunes remote mode, cold (first request per token:
  ``/api/me`` on the emulator over loopback + mirror), (e) simplejwt's
  ``JWTAuthentication`` (HS256 + one user query);
* the warm variants take turns request by request, in shuffled order, over
  many rounds, and the median round is reported: machine load and the caches
  one request leaves cold for the next weigh on each variant alike;
* remote calls per 10,000 requests over 100 distinct tokens are counted on the
  emulator, sequentially and from 4 threads at once (single-flight);
* the per-process LRU is filled with 1,000,000 distinct tokens' entries and
  its size and memory (tracemalloc) are reported.

Exit status 1 if a target fails. The ratios to the view with no
authentication are printed, not judged: in one process that view costs
under 100 us, so the few microseconds a warm request adds (one sha256, one
dictionary lookup, a user object of its own) weigh several times more than
under a real server, where benchmarks/bench_servers.py judges the warm path
(>= 0.95x the open view's throughput) and the cold path (<= 3x its latency).
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import statistics
import sys
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SECRET = "bench-secret-" + "x" * 40
DISTINCT_TOKENS = 100


def configure(db_path: str) -> None:
    import django
    from django.conf import settings

    settings.configure(
        SECRET_KEY="bench-only",
        DEBUG=False,
        USE_TZ=True,
        ALLOWED_HOSTS=["*"],
        ROOT_URLCONF=__name__,
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
        INSTALLED_APPS=[
            "django.contrib.auth",
            "django.contrib.contenttypes",
            "rest_framework",
            "keyrunes_django",
        ],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": db_path}},
        CACHES={"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}},
        PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"],
        KEYRUNES={"BASE_URL": "http://127.0.0.1:9", "JWT_SECRET": SECRET, "RETRIES": 0},
        REST_FRAMEWORK={
            "DEFAULT_AUTHENTICATION_CLASSES": [],
            "DEFAULT_PERMISSION_CLASSES": [],
            "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
        },
        SIMPLE_JWT={"SIGNING_KEY": SECRET, "ALGORITHM": "HS256"},
        LOGGING_CONFIG=None,
    )
    django.setup()
    import logging

    # The revocation check refuses a token on purpose; its log lines are no result.
    logging.getLogger("keyrunes_django").setLevel(logging.CRITICAL)


urlpatterns: list[Any] = []


def timed_batch(view: Callable[[Any], Any], make: Callable[[int], Any], n: int) -> float:
    """Microseconds per request over ``n`` requests (GC paused, like timeit)."""
    requests = [make(i) for i in range(n)]
    gc.disable()
    try:
        start = time.perf_counter()
        for request in requests:
            response = view(request)
            if response.status_code != 200:
                raise RuntimeError(f"unexpected status {response.status_code}")
        elapsed = time.perf_counter() - start
    finally:
        gc.enable()
    return elapsed / n * 1e6


def use_authenticator(state: Any) -> None:
    """Make ``state`` the process's authenticator, as a process configured that way has."""
    from keyrunes_django import tokens

    tokens._authenticator = state


def interleaved_round(
    variants: dict[str, tuple[Callable[[Any], Any], Callable[[int], Any], Any]], n: int
) -> dict[str, float]:
    """Microseconds per request of each variant over ``n`` requests each, taken in turns.

    Request ``i`` of every variant runs back to back, in a shuffled order, so
    a change in machine load, and the caches one request leaves cold for the
    next, weigh on every variant alike (GC paused, like timeit).
    """
    requests = {name: [make(i) for i in range(n)] for name, (_, make, _) in variants.items()}
    spent = dict.fromkeys(variants, 0.0)
    order = list(variants)
    clock = time.perf_counter
    gc.disable()
    try:
        for i in range(n):
            random.shuffle(order)
            for name in order:
                view, _, state = variants[name]
                if state is not None:
                    use_authenticator(state)
                request = requests[name][i]
                start = clock()
                response = view(request)
                spent[name] += clock() - start
                if response.status_code != 200:
                    raise RuntimeError(f"{name}: unexpected status {response.status_code}")
    finally:
        gc.enable()
    return {name: total / n * 1e6 for name, total in spent.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--cold", type=int, default=150, help="cold requests measured")
    parser.add_argument("--lru-tokens", type=int, default=1_000_000)
    args = parser.parse_args()

    tmp = tempfile.TemporaryDirectory(prefix="keyrunes-bench-")
    configure(os.path.join(tmp.name, "bench.sqlite3"))

    from django.contrib.auth import get_user_model
    from django.core.cache import caches
    from django.core.management import call_command
    from django.test import RequestFactory
    from rest_framework.response import Response
    from rest_framework.views import APIView
    from rest_framework_simplejwt.authentication import JWTAuthentication
    from rest_framework_simplejwt.tokens import AccessToken

    from keyrunes_django import cache
    from keyrunes_django.cache import CacheEntry, LocalCache
    from keyrunes_django.conf import keyrunes_settings
    from keyrunes_django.drf.authentication import KeyrunesTokenAuthentication
    from keyrunes_django.identity import VerifiedIdentity
    from keyrunes_django.testing import KeyrunesEmulator
    from keyrunes_django.tokens import TokenAuthenticator

    call_command("migrate", verbosity=0, run_syncdb=True)

    class Plain(APIView):
        authentication_classes: list[Any] = []
        permission_classes: list[Any] = []

        def get(self, request: Any) -> Response:
            return Response({"ok": True})

    class Keyrunes(Plain):
        authentication_classes = [KeyrunesTokenAuthentication]

    class SimpleJWT(Plain):
        authentication_classes = [JWTAuthentication]

    plain_view, keyrunes_view, simplejwt_view = (
        Plain.as_view(),
        Keyrunes.as_view(),
        SimpleJWT.as_view(),
    )
    factory = RequestFactory()

    def header_request(header: str) -> Any:
        return factory.get("/bench/", HTTP_AUTHORIZATION=header)

    emulator = KeyrunesEmulator(jwt_secret=SECRET)
    emulator.start()
    try:
        from django.test.utils import override_settings

        override = override_settings(
            KEYRUNES={"BASE_URL": emulator.base_url, "JWT_SECRET": SECRET, "RETRIES": 0}
        )
        override.enable()

        users = [emulator.create_user() for _ in range(DISTINCT_TOKENS)]
        now = int(time.time())
        token_serial = [0]

        def fresh_token(i: int) -> str:
            # Distinct issue times give distinct tokens for the same user.
            token_serial[0] += 1
            return emulator.issue_token(
                users[i % DISTINCT_TOKENS], issued_at=now - token_serial[0] % 1800
            )

        warm_tokens = [emulator.issue_token(u) for u in users]

        # One authenticator per mode, as two processes configured each way would have.
        local_state = TokenAuthenticator()
        local_state.mode = "local"
        remote_state = TokenAuthenticator()
        remote_state.mode = "remote"

        for state in (local_state, remote_state):
            use_authenticator(state)
            for token in warm_tokens:
                response = keyrunes_view(header_request("Bearer " + token))
                assert response.status_code == 200, response.status_code

        User = get_user_model()
        local_users = list(User.objects.order_by("pk")[:DISTINCT_TOKENS])
        jwt_tokens = [str(AccessToken.for_user(u)) for u in local_users]
        for token in jwt_tokens:
            assert simplejwt_view(header_request("Bearer " + token)).status_code == 200

        warm_headers = ["Bearer " + t for t in warm_tokens]
        jwt_headers = ["Bearer " + t for t in jwt_tokens]

        def make_warm(i: int) -> Any:
            return header_request(warm_headers[i % DISTINCT_TOKENS])

        def make_jwt(i: int) -> Any:
            return header_request(jwt_headers[i % DISTINCT_TOKENS])

        # Each variant: its view, how its requests are made, which authenticator it uses.
        variants: dict[str, tuple[Callable[[Any], Any], Callable[[int], Any], Any]] = {
            "DRF view, no authentication": (plain_view, make_warm, None),
            "keyrunes local mode (warm)": (keyrunes_view, make_warm, local_state),
            "keyrunes remote mode (warm)": (keyrunes_view, make_warm, remote_state),
            "djangorestframework-simplejwt": (simplejwt_view, make_jwt, None),
        }
        samples: dict[str, list[float]] = {name: [] for name in variants}
        interleaved_round(variants, args.batch)  # warm-up
        for _ in range(args.rounds):
            for name, cost in interleaved_round(variants, args.batch).items():
                samples[name].append(cost)

        # Cold: a token never seen before -> /api/me over loopback, then the mirror.
        use_authenticator(remote_state)
        cold_headers = ["Bearer " + fresh_token(i) for i in range(args.cold)]
        cold = timed_batch(keyrunes_view, lambda i: header_request(cold_headers[i]), args.cold)

        # Cold, local mode: a returning (already mirrored) user's new token.
        use_authenticator(local_state)
        local_cold_headers = ["Bearer " + fresh_token(i) for i in range(args.cold)]
        cold_local = timed_batch(
            keyrunes_view, lambda i: header_request(local_cold_headers[i]), args.cold
        )

        # Remote calls per 10,000 requests over 100 distinct tokens.
        def count_calls(threads: int) -> int:
            state = TokenAuthenticator()
            state.mode = "remote"
            use_authenticator(state)
            caches["default"].clear()
            headers = ["Bearer " + fresh_token(i) for i in range(DISTINCT_TOKENS)]
            emulator.reset_counters()
            per_thread = 10_000 // threads
            errors: list[BaseException] = []

            def worker(offset: int) -> None:
                try:
                    for i in range(per_thread):
                        request = header_request(headers[(i + offset) % DISTINCT_TOKENS])
                        response = keyrunes_view(request)
                        if response.status_code != 200:
                            raise RuntimeError(f"status {response.status_code}")
                except BaseException as exc:
                    errors.append(exc)
                finally:
                    from django.db import connection

                    connection.close()

            pool = [threading.Thread(target=worker, args=(t * 7,)) for t in range(threads)]
            for t in pool:
                t.start()
            for t in pool:
                t.join()
            if errors:
                raise errors[0]
            return emulator.requests_to("/api/me")

        calls_sequential = count_calls(1)
        calls_threaded = count_calls(4)

        # Revocation propagation: two authenticators sharing one cache stand for
        # two instances; one revokes, the other polls as warm requests would.
        def propagation() -> float:
            from django.test import RequestFactory as Factory

            from keyrunes_django.exceptions import InvalidToken
            from keyrunes_django.revocation import Subject, revoke_user_tokens

            user = users[0]
            token = emulator.issue_token(user, issued_at=int(time.time()) - 5)
            request = Factory().get("/", HTTP_AUTHORIZATION="Bearer " + token)
            other = TokenAuthenticator()
            assert other.authenticate(request) is not None
            started = time.monotonic()
            revoke_user_tokens(Subject(user.namespace, user.user_id), reason="bench")
            while time.monotonic() - started < 30:
                try:
                    other.warm("Bearer " + token) or other.authenticate(request)
                except InvalidToken:
                    return time.monotonic() - started
                time.sleep(0.01)
            return float("inf")

        propagation_seconds = propagation()
        interval = float(keyrunes_settings.REVOCATION_CHECK_INTERVAL)
        override.disable()
    finally:
        emulator.stop()

    # Memory: the per-process LRU after 1,000,000 distinct tokens.
    size = int(keyrunes_settings.LOCAL_CACHE_SIZE)
    lru = LocalCache(size)
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    at_capacity = 0
    stamp = time.time()
    for i in range(args.lru_tokens):
        identity = VerifiedIdentity(
            user_id=i,
            username=f"user{i}",
            email=f"user{i}@example.com",
            namespace="public",
            organization_id=1,
            groups=("users",),
        )
        lru.set(
            cache.credential_hash(f"token-{i}"),
            CacheEntry(value=identity, stored_at=stamp, fresh_until=stamp, stale_until=stamp),
        )
        if i + 1 == 2 * size:
            gc.collect()
            at_capacity = tracemalloc.get_traced_memory()[0] - base
    gc.collect()
    after = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()

    # ------------------------------------------------------------------ report
    medians = {name: statistics.median(values) for name, values in samples.items()}
    plain_name = "DRF view, no authentication"
    base_cost = medians[plain_name]
    # Each round's variants ran back to back, so a per-round ratio cancels
    # load changes on the machine; the median of those is the reported ratio.
    ratios = {
        name: statistics.median(v / p for v, p in zip(values, samples[plain_name], strict=True))
        for name, values in samples.items()
    }
    ratios["cold"] = cold / base_cost
    ratios["cold local"] = cold_local / base_cost
    rows = [(name, medians[name], ratios[name]) for name in variants]
    rows.insert(2, ("keyrunes local mode (cold, returning user)", cold_local, ratios["cold local"]))
    rows.insert(4, ("keyrunes remote mode (cold, 1st request)", cold, ratios["cold"]))
    print()
    print(f"Per-request cost, median of {args.rounds} interleaved rounds x {args.batch} requests")
    print(f"(cold: {args.cold} first requests; Python {sys.version.split()[0]})")
    print()
    print(f"| {'variant':<42} | {'us/request':>10} | {'ratio':>7} |")
    print(f"|{'-' * 44}|{'-' * 12}|{'-' * 9}|")
    for name, value, ratio in rows:
        print(f"| {name:<42} | {value:>10.1f} | {ratio:>6.2f}x |")
    print()
    print(
        f"Remote /api/me calls per 10,000 requests over {DISTINCT_TOKENS} distinct tokens: "
        f"{calls_sequential} (1 thread), {calls_threaded} (4 threads)"
    )
    print(
        f"Revocation reached a second instance after {propagation_seconds:.2f} s "
        f"(REVOCATION_CHECK_INTERVAL={interval:g} s)"
    )
    print(
        f"Per-process LRU after {args.lru_tokens:,} distinct tokens: {len(lru):,} entries "
        f"(LOCAL_CACHE_SIZE={size:,}); {after / 1e6:.1f} MB traced "
        f"({at_capacity / 1e6:.1f} MB at {2 * size:,} tokens)"
    )
    print()

    jwt_ratio = ratios["djangorestframework-simplejwt"]
    targets = []
    for mode in ("local", "remote"):
        warm = ratios[f"keyrunes {mode} mode (warm)"]
        targets.append((f"keyrunes {mode} warm <= 0.5x simplejwt", warm / jwt_ratio, 0.5))
    checks = [
        (name, f"{value:.2f}x (limit {limit}x)", value <= limit) for name, value, limit in targets
    ]
    checks.append(
        (
            "remote calls <= distinct tokens per TTL",
            f"{max(calls_sequential, calls_threaded)} <= {DISTINCT_TOKENS}",
            max(calls_sequential, calls_threaded) <= DISTINCT_TOKENS,
        )
    )
    checks.append(
        (
            "revocation propagates within REVOCATION_CHECK_INTERVAL",
            f"{propagation_seconds:.2f} s <= {interval:g} s + 0.1 s",
            propagation_seconds <= interval + 0.1,
        )
    )
    checks.append(
        (
            "per-process LRU stays bounded",
            f"{len(lru):,} entries, {after / 1e6:.1f} MB vs {at_capacity / 1e6:.1f} MB",
            len(lru) == size and after <= at_capacity * 1.1 + 1e6,
        )
    )
    added = {
        mode: medians[f"keyrunes {mode} mode (warm)"] - base_cost for mode in ("local", "remote")
    }
    print(
        f"A warm request adds {added['local']:.1f} us (local) / {added['remote']:.1f} us (remote) "
        "to the view; under real servers see benchmarks/bench_servers.py."
    )
    print("Targets:")
    for name, detail, ok in checks:
        print(f"  {'PASS' if ok else 'FAIL'}  {name}: {detail}")
    tmp.cleanup()
    return 0 if all(ok for _, _, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())

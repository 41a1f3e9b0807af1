"""``manage.py keyrunes_check``: diagnose the Keyrunes configuration and connection."""

from __future__ import annotations

import hashlib
import time
from argparse import ArgumentParser
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.core.management.base import CommandError

from keyrunes_django.claims import ParsedToken
from keyrunes_django.claims import parse as parse_token
from keyrunes_django.conf import MIN_SECRET_BYTES, keyrunes_settings, unknown_key_message
from keyrunes_django.exceptions import (
    InvalidToken,
    KeyrunesError,
    ServiceAccountError,
)
from keyrunes_django.management.commands._common import SERVICE_ACCOUNT_SETTING, KeyrunesCommand
from keyrunes_django.verification import verify_signature
from keyrunes_django.version import __version__

OK, WARN, FAIL, SKIP = "OK", "WARN", "FAIL", "SKIP"
#: Local verification refuses tokens whose iat is ahead by more than the leeway.

# Indirection so tests can move our clock against the server's.
_now: Callable[[], float] = time.time


@dataclass
class Finding:
    status: str
    topic: str
    message: str


def _fingerprint(value: str) -> str:
    return "sha256:" + hashlib.sha256(value.encode("utf-8")).hexdigest()[:12]


class Command(KeyrunesCommand):
    help = (
        "Diagnose the Keyrunes setup: settings (no secret is printed), reachability, "
        "/api/health and /api/health/ready, clock skew against a freshly issued token, "
        "organization key validity, and whether JWT_SECRET verifies a fresh token. Each "
        "line is OK, WARN, FAIL or SKIP. Exits non-zero when any line is FAIL."
    )
    dry_run_help = "Check the settings only; contact no server."
    reports_json = True

    def add_arguments(self, parser: ArgumentParser) -> None:
        super().add_arguments(parser)
        parser.add_argument(
            "--fail-on-warn",
            action="store_true",
            help="Exit non-zero on WARN lines too (e.g. in CI).",
        )
        parser.add_argument(
            "--max-skew",
            type=float,
            default=None,
            metavar="SECONDS",
            help="Clock skew that counts as FAIL. Default: JWT_LEEWAY.",
        )

    # --------------------------------------------------------------- output

    def report(self, status: str, topic: str, message: str) -> None:
        self.findings.append(Finding(status, topic, message))
        if self.verbosity < 1:
            return
        style: Callable[[str], str] = {
            OK: self.style.SUCCESS,
            WARN: self.style.WARNING,
            FAIL: self.style.ERROR,
        }.get(status, str)
        self.stdout.write(f"{style(status.ljust(4))} {topic}: {message}")

    # ---------------------------------------------------------------- checks

    def check_settings(self) -> bool:
        """Report on the settings; False when they are too broken to go on."""
        unknown = keyrunes_settings.unknown_keys()
        if unknown:
            self.report(FAIL, "settings", f"unknown keys: {', '.join(unknown)}")
            for key in unknown:
                self.detail(f"     {unknown_key_message(key)}")
            return False
        base_url = keyrunes_settings.BASE_URL
        if not base_url:
            self.report(FAIL, "settings", "BASE_URL is not set")
        else:
            self.report(OK, "settings", f"BASE_URL = {base_url}")
        self.report(
            OK,
            "settings",
            f"NAMESPACE = {keyrunes_settings.NAMESPACE!r}, ORGANIZATION_SCOPE = "
            f"{keyrunes_settings.ORGANIZATION_SCOPE!r}, verification = "
            f"{keyrunes_settings.verification_mode}",
        )
        secret = keyrunes_settings.JWT_SECRET
        mode = keyrunes_settings.verification_mode
        if secret:
            size = len(str(secret).encode("utf-8"))
            status = OK if size >= MIN_SECRET_BYTES else WARN
            note = "" if size >= MIN_SECRET_BYTES else " (shorter than 32 bytes)"
            self.report(status, "settings", f"JWT_SECRET is set, {size} bytes{note}")
        elif mode == "local":
            self.report(FAIL, "settings", "VERIFICATION_MODE is local but JWT_SECRET is not set")
        else:
            self.report(OK, "settings", "JWT_SECRET not set: tokens are verified remotely")
        key = keyrunes_settings.ORGANIZATION_KEY
        if key:
            self.report(OK, "settings", f"ORGANIZATION_KEY is set ({_fingerprint(str(key))})")
        else:
            self.report(SKIP, "settings", "ORGANIZATION_KEY not set")
        account = keyrunes_settings.SERVICE_ACCOUNT
        if account is None:
            self.report(SKIP, "settings", f"{SERVICE_ACCOUNT_SETTING} not set")
        else:
            from keyrunes_django.service_account import service_account_problems

            problems = service_account_problems(account)
            if problems:
                self.report(FAIL, "settings", " ".join(problems))
            elif "TOKEN_ENV" in account:
                self.report(OK, "settings", f"SERVICE_ACCOUNT token from ${account['TOKEN_ENV']}")
            else:
                self.report(OK, "settings", f"SERVICE_ACCOUNT identity {account['IDENTITY']!r}")
        return True

    def check_breaker(self) -> None:
        from django.core.exceptions import ImproperlyConfigured

        from keyrunes_django.breaker import CLOSED, get_breaker

        try:
            breaker = get_breaker()
        except ImproperlyConfigured as exc:
            self.report(FAIL, "breaker", str(exc))
            return
        if breaker.state == CLOSED:
            self.report(OK, "breaker", f"closed ({breaker.failures} consecutive failure(s))")
        else:
            self.report(
                WARN,
                "breaker",
                f"{breaker.state}: calls to Keyrunes refused for "
                f"{breaker.retry_after():.0f} s more",
            )

    def check_health(self, client: Any) -> bool:
        started = time.monotonic()
        try:
            health = client.health()
        except KeyrunesError as exc:
            self.report(FAIL, "reachability", f"{keyrunes_settings.BASE_URL}: {exc}")
            return False
        elapsed = (time.monotonic() - started) * 1000
        self.report(OK, "reachability", f"answered in {elapsed:.0f} ms")
        version = f" (version {health.version})" if health.version else ""
        if health.healthy:
            self.report(OK, "health", f"/api/health: {health.status}{version}")
        else:
            database = health.database.status if health.database else "unknown"
            self.report(
                FAIL, "health", f"/api/health: {health.status} (database {database}){version}"
            )
        try:
            ready = client.health_ready()
        except KeyrunesError as exc:
            self.report(FAIL, "health", f"/api/health/ready: {exc}")
        else:
            if ready.ready:
                self.report(OK, "health", "/api/health/ready: ready")
            else:
                self.report(
                    FAIL, "health", f"/api/health/ready: {ready.status} ({ready.error or '-'})"
                )
        return True

    def check_service_account(self, client: Any, max_skew: float) -> None:
        if keyrunes_settings.SERVICE_ACCOUNT is None:
            self.report(SKIP, "clock", f"no {SERVICE_ACCOUNT_SETTING}: skew not measured")
            self.report(SKIP, "jwt secret", f"no {SERVICE_ACCOUNT_SETTING}: no token to verify")
            return
        from keyrunes_django.service_account import get_service_token

        before = _now()
        try:
            # A forced refresh logs in (or refreshes) now, so iat is fresh.
            token = get_service_token(force_refresh=True)
        except (ServiceAccountError, KeyrunesError) as exc:
            self.report(FAIL, "service account", f"{exc} (check {SERVICE_ACCOUNT_SETTING})")
            return
        after = _now()
        try:
            parsed = parse_token(token)
        except InvalidToken as exc:
            self.report(FAIL, "service account", f"the token is not a Keyrunes JWT ({exc.reason})")
            return
        claims = parsed.payload
        self.report(
            OK,
            "service account",
            f"logged in as {claims.get('username')!r} (namespace {claims.get('namespace')!r}, "
            f"groups {', '.join(claims.get('groups') or []) or '-'})",
        )
        self.check_skew(claims, before, after, max_skew)
        self.check_secret(parsed)
        self.check_admin_rights(client, token, claims)

    def check_skew(
        self, claims: dict[str, Any], before: float, after: float, max_skew: float
    ) -> None:
        iat = claims.get("iat")
        if not isinstance(iat, int):
            self.report(FAIL, "clock", "the fresh token has no integer iat")
            return
        # iat has 1 s resolution: only an iat outside [before-1, after] is skew.
        if iat > after:
            skew = iat - after
        elif iat < before - 1:
            skew = iat - (before - 1)
        else:
            skew = 0.0
        text = f"server clock is {skew:+.0f} s from ours (token iat vs local time)"
        if abs(skew) > max_skew:
            self.report(FAIL, "clock", f"{text}; more than {max_skew:.0f} s: fix NTP")
        elif abs(skew) > max_skew / 2:
            self.report(WARN, "clock", text)
        else:
            self.report(OK, "clock", text)

    def check_secret(self, parsed: ParsedToken) -> None:
        secret = keyrunes_settings.JWT_SECRET
        if not secret:
            status = FAIL if keyrunes_settings.verification_mode == "local" else SKIP
            self.report(status, "jwt secret", "JWT_SECRET not set: local verification off")
            return
        try:
            verify_signature(parsed)
        except InvalidToken:
            self.report(
                FAIL,
                "jwt secret",
                "JWT_SECRET does not verify a token the server just issued: it differs from "
                "the server's JWT_SECRET",
            )
        else:
            self.report(OK, "jwt secret", "JWT_SECRET verifies a freshly issued token")

    def check_admin_rights(self, client: Any, token: str, claims: dict[str, Any]) -> None:
        groups = set(claims.get("groups") or [])
        if not groups & {"admin", "superadmin"}:
            self.report(
                WARN,
                "service account",
                "not in group admin or superadmin: the sync commands will be refused",
            )
            return
        try:
            self.debug(f"service account groups: {sorted(groups)}")
            groups_listed = client.list_groups(token, org_id=claims.get("organization_id"))
        except KeyrunesError as exc:
            self.report(FAIL, "service account", f"admin API refused: {exc}")
        else:
            self.report(OK, "service account", "admin API reachable with the service token")
            self.check_group_collisions(groups_listed, claims)

    def check_group_collisions(self, remote_groups: Any, claims: dict[str, Any]) -> None:
        """WARN about local-only groups that a remote group's name maps onto."""
        from django.db import DatabaseError

        from keyrunes_django.sync import group_collisions

        organization_id = claims.get("organization_id")
        try:
            collisions = group_collisions(
                remote_groups,
                namespace=str(keyrunes_settings.NAMESPACE),
                organization_id=organization_id if isinstance(organization_id, int) else 0,
            )
        except DatabaseError as exc:
            self.report(SKIP, "groups", f"local groups not readable ({type(exc).__name__})")
            return
        if collisions:
            pairs = ", ".join(f"{local} (from {remote})" for local, remote in collisions.items())
            self.report(
                WARN,
                "groups",
                f"local-only groups named like remote groups are not mirrored: {pairs}; "
                "rename them, or list them in ADOPT_GROUPS to let Keyrunes manage them",
            )
        else:
            self.report(OK, "groups", "no remote group collides with a local-only group")

    def check_org_key(self, client: Any) -> None:
        self.check_org_key_binding()
        key = keyrunes_settings.ORGANIZATION_KEY
        if not key:
            self.report(SKIP, "org key", "ORGANIZATION_KEY not set")
            return
        from keyrunes_django.tokens import authenticate_organization_key

        try:
            principal = authenticate_organization_key(str(key))
        except InvalidToken as exc:
            hint = {
                "invalid_key": "Keyrunes does not know it (rotated?)",
                "scope_mismatch": "it is the key of another organization than this service's",
                "organization_unknown": "this service's organization is not established",
            }.get(exc.reason, exc.message)
            self.report(FAIL, "org key", f"ORGANIZATION_KEY is refused ({exc.reason}): {hint}")
            return
        except KeyrunesError as exc:
            self.report(FAIL, "org key", f"could not verify ORGANIZATION_KEY: {exc}")
            return
        name = f" ({principal.name})" if principal.name else ""
        self.report(OK, "org key", f"valid, organization {principal.organization_id}{name}")

    def check_org_key_binding(self) -> None:
        """Which organization's keys this service accepts, and how to fix it when none."""
        from keyrunes_django.tenancy import service_organization

        try:
            own = service_organization(max_age=0.0)
        except KeyrunesError as exc:
            self.report(FAIL, "org key binding", f"could not establish the organization: {exc}")
            return
        if own is None:
            self.report(
                WARN,
                "org key binding",
                "organization keys are refused: set ORGANIZATION_SCOPE to this service's "
                "organization id, or configure SERVICE_ACCOUNT so it is looked up by NAMESPACE",
            )
            return
        self.report(
            OK,
            "org key binding",
            f"organization keys of organization {own.organization_id} only",
        )

    # ------------------------------------------------------------------ main

    def handle(self, *args: Any, **options: Any) -> None:
        self.setup(options)
        self.findings: list[Finding] = []
        self.info(f"keyrunes-django {__version__}")
        settings_ok = self.check_settings()
        if settings_ok:
            self.check_breaker()
        if self.dry_run:
            self.info("Dry run: no server contacted.")
        elif settings_ok and keyrunes_settings.BASE_URL:
            from keyrunes_django.client import get_client

            max_skew = options.get("max_skew")
            if max_skew is None:
                max_skew = float(keyrunes_settings.JWT_LEEWAY)
            client = get_client()
            if self.check_health(client):
                self.check_org_key(client)
                self.check_service_account(client, float(max_skew))
        counts = dict.fromkeys((OK, WARN, FAIL, SKIP), 0)
        for finding in self.findings:
            counts[finding.status] += 1
        self.info(
            f"{counts[OK]} ok, {counts[WARN]} warning(s), {counts[FAIL]} failure(s), "
            f"{counts[SKIP]} skipped."
        )
        if self.json_output:
            self.emit_json(
                {
                    "version": __version__,
                    "dry_run": self.dry_run,
                    "counts": counts,
                    "findings": self.findings,
                }
            )
        if counts[FAIL] or (options.get("fail_on_warn") and counts[WARN]):
            raise CommandError(
                f"Keyrunes check found {counts[FAIL]} failure(s) and {counts[WARN]} warning(s)."
            )

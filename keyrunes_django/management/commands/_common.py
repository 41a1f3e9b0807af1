"""What every ``keyrunes_*`` management command shares.

Verbosity follows Django: 0 silent, 1 summary (default), 2 one line per item,
3 debug. Progress goes to stderr, only at verbosity >= 1, and only when stderr
is a terminal or the run is long. Every failure becomes a
:class:`~django.core.management.base.CommandError` (non-zero exit).
"""

from __future__ import annotations

import dataclasses
import json
import sys
import textwrap
import time
from argparse import ArgumentParser, ArgumentTypeError, RawDescriptionHelpFormatter
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connection, reset_queries

from keyrunes_django import tenancy
from keyrunes_django.exceptions import (
    AuthenticationFailed,
    KeyrunesError,
    PermissionDenied,
    ServiceAccountError,
)
from keyrunes_django.sync import GroupSyncReport, SyncAborted, UserSyncReport

T = TypeVar("T")

SERVICE_ACCOUNT_SETTING = 'KEYRUNES["SERVICE_ACCOUNT"]'
#: Runs with at least this many items print progress even without a terminal.
LONG_RUN = 1000


class KeyrunesCommand(BaseCommand):
    """Base class: ``--dry-run``, verbosity helpers, progress, service-account access."""

    dry_run_help = "Show what would change without writing anything."
    verbosity = 1
    dry_run = False
    #: Reporting commands set this: they get ``--format json``.
    reports_json = False
    json_output = False

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        # Keep the epilog's line breaks (exit codes, examples).
        parser.formatter_class = RawDescriptionHelpFormatter
        if self.help:
            parser.description = textwrap.fill(str(self.help), width=79)
        parser.epilog = self.epilog()
        return parser

    def epilog(self) -> str:
        return (
            "Exit status: 0 on success, 1 on any failure (the reason is printed on stderr).\n"
            "Verbosity: 0 silent, 1 summary (default), 2 one line per item, 3 debug."
        )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--dry-run", action="store_true", help=self.dry_run_help)
        if self.reports_json:
            parser.add_argument(
                "--format",
                choices=("text", "json"),
                default="text",
                help="text (default): lines for people; json: one JSON document on stdout "
                "and nothing else there (errors still go to stderr).",
            )

    def setup(self, options: dict[str, Any]) -> None:
        self.json_output = options.get("format") == "json"
        # In JSON mode stdout carries the document only.
        self.verbosity = 0 if self.json_output else int(options.get("verbosity", 1))
        self.dry_run = bool(options.get("dry_run", False))
        self._progress_shown = False
        self._last_progress = 0.0

    # ------------------------------------------------------------ output

    def info(self, message: str) -> None:
        if self.verbosity >= 1:
            self.stdout.write(message)

    def detail(self, message: str) -> None:
        if self.verbosity >= 2:
            self.stdout.write(message)

    def debug(self, message: str) -> None:
        if self.verbosity >= 3:
            self.stdout.write(message)

    def warn(self, message: str) -> None:
        if self.verbosity >= 1:
            self.stderr.write(message)

    def _stderr_is_tty(self) -> bool:
        stream = getattr(self.stderr, "_out", sys.stderr)
        isatty = getattr(stream, "isatty", None)
        return bool(isatty and isatty())

    def progress(self, label: str, done: int, total: int) -> None:
        """A ``label: done/total (pct%)`` line on stderr for long runs."""
        if self.verbosity < 1 or total <= 0:
            return
        tty = self._stderr_is_tty()
        if not tty and total < LONG_RUN:
            return
        now = time.monotonic()
        last = done >= total
        # Throttle redraws; a pipe gets a line at most every 2 s plus the last one.
        interval = 0.1 if tty else 2.0
        if not last and now - self._last_progress < interval:
            return
        self._last_progress = now
        pct = 100 * done // total
        line = f"{label}: {done}/{total} ({pct}%)"
        if tty:
            self.stderr.write(f"\r{line}", ending="\n" if last else "")
        else:
            self.stderr.write(line)
        self._progress_shown = True

    def emit_json(self, document: Mapping[str, Any]) -> None:
        """Write ``document`` to stdout as JSON (``--format json``)."""
        self.stdout.write(json.dumps(json_data(document), indent=2, sort_keys=True))

    # ------------------------------------------------------- service account

    def service_token(self, *, force_refresh: bool = False) -> str:
        from keyrunes_django.service_account import get_service_token

        try:
            return get_service_token(force_refresh=force_refresh)
        except ServiceAccountError as exc:
            raise CommandError(
                f"Service account unavailable: {exc}. Configure {SERVICE_ACCOUNT_SETTING}."
            ) from exc
        except AuthenticationFailed as exc:
            raise CommandError(
                f"Keyrunes refused the service account ({exc}). Check {SERVICE_ACCOUNT_SETTING}."
            ) from exc
        except KeyrunesError as exc:
            raise CommandError(f"Could not log the service account in: {exc}") from exc

    def admin(self, action: str, fn: Callable[[str], T]) -> T:
        """Run ``fn(service_token)``, retrying once on a 401, with errors as CommandError."""
        from keyrunes_django.service_account import admin_call

        try:
            return admin_call(fn)
        except ServiceAccountError as exc:
            raise CommandError(f"{action} failed: {exc}. Check {SERVICE_ACCOUNT_SETTING}.") from exc
        except KeyrunesError as exc:
            raise self.admin_error(action, exc) from exc

    def admin_error(self, action: str, exc: KeyrunesError) -> CommandError:
        """A CommandError for a failed admin API call, naming the setting when it is a 401/403."""
        if isinstance(exc, AuthenticationFailed):
            return CommandError(
                f"{action} failed: Keyrunes refused the service account token ({exc}). "
                f"Check {SERVICE_ACCOUNT_SETTING}."
            )
        if isinstance(exc, PermissionDenied):
            return CommandError(
                f"{action} failed: the service account lacks admin rights ({exc}). "
                f"{SERVICE_ACCOUNT_SETTING} must be an admin or superadmin."
            )
        return CommandError(f"{action} failed: {exc}")

    def resolve_scope(self, token: str, organization_id: int | None = None) -> tuple[str, int]:
        """(namespace, organization id) whose users and groups the command works on.

        The organization is, in order: the command's ``--organization-id``,
        ``ORGANIZATION_SCOPE``, the service account token's own organization
        when the token belongs to the configured ``NAMESPACE``, else the
        organization whose namespace is ``NAMESPACE`` (admin API listing).
        """
        from keyrunes_django.service_account import resolve_organization_id

        namespace = tenancy.namespace()
        try:
            return namespace, resolve_organization_id(
                token, namespace, organization_id, scope=tenancy.organization_scope()
            )
        except ServiceAccountError as exc:
            raise CommandError(
                f"No organization has namespace {namespace!r}; set "
                "KEYRUNES['ORGANIZATION_SCOPE'] or pass --organization-id."
            ) from exc
        except KeyrunesError as exc:
            raise self.admin_error("Listing organizations", exc) from exc


class SyncCommand(KeyrunesCommand):
    """Base of the ``keyrunes_sync_*`` commands: list remote items, then sync them.

    Subclasses set :attr:`noun` and implement :meth:`list_remote` and :meth:`sync`.
    """

    #: What is listed ("users", "groups"), for messages.
    noun = ""
    reports_json = True

    def add_arguments(self, parser: ArgumentParser) -> None:
        super().add_arguments(parser)
        self.add_sync_arguments(parser)
        parser.add_argument(
            "--organization-id",
            type=int,
            help="Organization to sync. Default: ORGANIZATION_SCOPE, else the organization "
            "of the configured NAMESPACE.",
        )

    def add_sync_arguments(self, parser: ArgumentParser) -> None:
        """The command's own options (listed before ``--organization-id``)."""

    def list_remote(self, client: Any, token: str, organization_id: int) -> Iterable[Any]:
        """The remote listing: a list, or an iterator that fetches as it is consumed."""
        raise NotImplementedError

    def sync(
        self,
        listing: Iterable[Any],
        *,
        namespace: str,
        organization_id: int,
        options: dict[str, Any],
    ) -> UserSyncReport | GroupSyncReport:
        raise NotImplementedError

    def handle(self, *args: Any, **options: Any) -> None:
        self.setup(options)
        from keyrunes_django.client import get_client

        client = get_client()
        token = self.service_token()
        namespace, organization_id = self.resolve_scope(token, options.get("organization_id"))
        self.debug(f"namespace {namespace!r}, organization {organization_id}")
        action = f"Listing {self.noun} (nothing was changed)"
        listing = self.admin(action, lambda t: self.list_remote(client, t, organization_id))
        reset_queries()
        before = len(connection.queries)
        try:
            report = self.sync(
                listing, namespace=namespace, organization_id=organization_id, options=options
            )
        except SyncAborted as exc:
            raise CommandError(str(exc)) from exc
        except KeyrunesError as exc:  # a streamed listing fails while it is read
            raise self.admin_error(action, exc) from exc
        self.detail(
            f"Keyrunes listed {report.remote} {self.noun} of organization {organization_id}."
        )
        for line in report.items:
            self.detail(("would " if self.dry_run else "") + line)
        self.debug(f"{len(connection.queries) - before} database queries (with DEBUG=True).")
        self.info(report.summary())
        if self.json_output:
            self.emit_json(
                {"namespace": namespace, "organization_id": organization_id, "report": report}
            )


def json_data(value: Any) -> Any:
    """``value`` as plain JSON types: dataclasses and mappings become objects.

    Not :func:`dataclasses.asdict`, which rebuilds a ``Counter`` from pairs and
    so counts the pairs instead of keeping the counts.
    """
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: json_data(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(key): json_data(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_data(item) for item in value]
    if isinstance(value, (set, frozenset)):
        return sorted(json_data(item) for item in value)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def positive_percent(value: str) -> float:
    """argparse type: a number from 0 to 100."""
    try:
        number = float(value)
    except ValueError as exc:
        raise ArgumentTypeError(f"{value!r} is not a number") from exc
    if not 0 <= number <= 100:
        raise ArgumentTypeError(f"{value!r} is not between 0 and 100")
    return number

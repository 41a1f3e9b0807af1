"""``manage.py keyrunes_sync_users``: mirror every Keyrunes user of the organization in bulk."""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import CommandError
from django.db import connection, reset_queries

from keyrunes_django.management.commands._common import KeyrunesCommand, positive_percent
from keyrunes_django.sync import DEFAULT_MAX_SHRINK, SyncAborted, fetch_all, sync_users


class Command(KeyrunesCommand):
    help = (
        "Pull every user of the organization from Keyrunes (GET /api/admin/users, as the "
        'service account KEYRUNES["SERVICE_ACCOUNT"]) and mirror them onto local users in '
        "bulk, with the same mapping rules as login (USER_ATTR_MAP, GROUP_MAP, MIRROR_GROUPS, "
        "FLAGS_BY_GROUP, REQUIRE_GROUP, DENY_GROUP). Users are never deleted. Nothing is "
        "changed when the listing fails or shrank by more than --max-shrink percent."
    )
    dry_run_help = "Compute and print what would change, but write nothing."

    def add_arguments(self, parser: ArgumentParser) -> None:
        super().add_arguments(parser)
        parser.add_argument(
            "--deactivate-missing",
            action="store_true",
            help="Deactivate (is_active=False, never delete) mirrored local users that no "
            "longer exist in Keyrunes.",
        )
        parser.add_argument(
            "--max-shrink",
            type=positive_percent,
            default=DEFAULT_MAX_SHRINK,
            metavar="PERCENT",
            help="Abort without changes when the remote listing has more than PERCENT fewer "
            "users than the active mirrored users (default %(default)s; 100 disables).",
        )
        parser.add_argument(
            "--organization-id",
            type=int,
            help="Organization to sync. Default: ORGANIZATION_SCOPE, else the organization "
            "of the configured NAMESPACE.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        self.setup(options)
        from keyrunes_django.client import get_client

        client = get_client()
        token = self.service_token()
        namespace, organization_id = self.resolve_scope(token, options.get("organization_id"))
        self.debug(f"namespace {namespace!r}, organization {organization_id}")
        # The server does not page this listing; fetch_all would follow pages if it did.
        users = self.admin(
            "Listing users (nothing was changed)",
            lambda t: fetch_all(lambda _page: client.list_users(t, organization_id)),
        )
        self.detail(f"Keyrunes listed {len(users)} users of organization {organization_id}.")
        max_shrink = float(options["max_shrink"])
        reset_queries()
        before = len(connection.queries)
        try:
            report = sync_users(
                users,
                namespace=namespace,
                organization_id=organization_id,
                deactivate_missing=bool(options.get("deactivate_missing")),
                max_shrink=None if max_shrink >= 100 else max_shrink,
                dry_run=self.dry_run,
                progress=self.progress,
            )
        except SyncAborted as exc:
            raise CommandError(str(exc)) from exc
        for line in report.items:
            self.detail(("would " if self.dry_run else "") + line)
        self.debug(f"{len(connection.queries) - before} database queries (with DEBUG=True).")
        self.info(report.summary())

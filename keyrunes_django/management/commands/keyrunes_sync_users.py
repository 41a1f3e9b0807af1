"""``manage.py keyrunes_sync_users``: mirror every Keyrunes user of the organization in bulk."""

from __future__ import annotations

from argparse import ArgumentParser
from collections.abc import Iterable, Iterator
from typing import Any

from keyrunes_django.management.commands._common import SyncCommand, positive_percent
from keyrunes_django.sync import DEFAULT_MAX_SHRINK, UserSyncReport, sync_users


class Command(SyncCommand):
    help = (
        "Pull every user of the organization from Keyrunes (GET /api/admin/users, as the "
        'service account KEYRUNES["SERVICE_ACCOUNT"]) and mirror them onto local users in '
        "bulk, with the same mapping rules as login (USER_ATTR_MAP, GROUP_MAP, MIRROR_GROUPS, "
        "FLAGS_BY_GROUP, REQUIRE_GROUP, DENY_GROUP). The listing is read as a stream and "
        "applied in chunks. Users are never deleted. Nothing is changed when the listing "
        "fails, names a user twice, or shrank by more than --max-shrink percent."
    )
    dry_run_help = "Compute and print what would change, but write nothing."
    noun = "users"

    def add_sync_arguments(self, parser: ArgumentParser) -> None:
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

    def list_remote(self, client: Any, token: str, organization_id: int) -> Iterator[Any]:
        users: Iterator[Any] = client.iter_users(token, organization_id)
        return users

    def sync(
        self,
        listing: Iterable[Any],
        *,
        namespace: str,
        organization_id: int,
        options: dict[str, Any],
    ) -> UserSyncReport:
        max_shrink = float(options["max_shrink"])
        return sync_users(
            listing,
            namespace=namespace,
            organization_id=organization_id,
            deactivate_missing=bool(options.get("deactivate_missing")),
            max_shrink=None if max_shrink >= 100 else max_shrink,
            dry_run=self.dry_run,
            progress=self.progress,
            # Printed as they come, not kept: memory stays flat on large listings.
            # Lines go out as they come (memory stays flat), except for a JSON
            # report, which lists them.
            on_item=None
            if self.json_output
            else lambda line: self.detail(("would " if self.dry_run else "") + line),
        )

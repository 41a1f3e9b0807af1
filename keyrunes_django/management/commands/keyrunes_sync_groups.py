"""``manage.py keyrunes_sync_groups``: mirror the organization's Keyrunes groups."""

from __future__ import annotations

from argparse import ArgumentParser
from collections.abc import Iterable
from typing import Any

from keyrunes_django.management.commands._common import SyncCommand, positive_percent
from keyrunes_django.sync import DEFAULT_GROUP_MAX_SHRINK, GroupSyncReport, sync_groups


class Command(SyncCommand):
    help = (
        "Pull every group of the organization from Keyrunes (GET /api/admin/groups, as the "
        'service account KEYRUNES["SERVICE_ACCOUNT"]) into Django groups, named by the same '
        "GROUP_MAP / MIRROR_GROUPS rules as login, and mark them as mirrored. Local-only "
        "groups, and local groups that a remote group's name collides with (unless listed in "
        "ADOPT_GROUPS), are never changed. Nothing is changed when the listing fails."
    )
    dry_run_help = "Print what would be created, marked or pruned, but write nothing."
    noun = "groups"

    def add_sync_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument(
            "--prune",
            action="store_true",
            help="Delete local groups that were mirrored from this namespace and no longer "
            "exist in Keyrunes. Groups never mirrored are never deleted.",
        )
        parser.add_argument(
            "--max-shrink",
            type=positive_percent,
            default=DEFAULT_GROUP_MAX_SHRINK,
            metavar="PERCENT",
            help="With --prune, abort without changes when more than PERCENT of the mirrored "
            "groups would be pruned (default %(default)s; 100 disables).",
        )

    def list_remote(self, client: Any, token: str, organization_id: int) -> list[Any]:
        return list(client.list_groups(token, organization_id))

    def sync(
        self,
        listing: Iterable[Any],
        *,
        namespace: str,
        organization_id: int,
        options: dict[str, Any],
    ) -> GroupSyncReport:
        max_shrink = float(options.get("max_shrink", DEFAULT_GROUP_MAX_SHRINK))
        return sync_groups(
            listing,
            namespace=namespace,
            organization_id=organization_id,
            prune=bool(options.get("prune")),
            max_shrink=None if max_shrink >= 100 else max_shrink,
            dry_run=self.dry_run,
        )

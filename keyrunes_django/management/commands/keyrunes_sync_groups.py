"""``manage.py keyrunes_sync_groups``: mirror the organization's Keyrunes groups."""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import CommandError

from keyrunes_django.management.commands._common import KeyrunesCommand
from keyrunes_django.sync import SyncAborted, fetch_all, sync_groups


class Command(KeyrunesCommand):
    help = (
        "Pull every group of the organization from Keyrunes (GET /api/admin/groups, as the "
        'service account KEYRUNES["SERVICE_ACCOUNT"]) into Django groups, named by the same '
        "GROUP_MAP / MIRROR_GROUPS rules as login, and mark them as mirrored. Local-only "
        "groups are never changed. Nothing is changed when the listing fails."
    )
    dry_run_help = "Print what would be created, marked or pruned, but write nothing."

    def add_arguments(self, parser: ArgumentParser) -> None:
        super().add_arguments(parser)
        parser.add_argument(
            "--prune",
            action="store_true",
            help="Delete local groups that were mirrored from this namespace and no longer "
            "exist in Keyrunes. Groups never mirrored are never deleted.",
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
        groups = self.admin(
            "Listing groups (nothing was changed)",
            lambda t: fetch_all(lambda _page: client.list_groups(t, organization_id)),
        )
        self.detail(f"Keyrunes listed {len(groups)} groups of organization {organization_id}.")
        try:
            report = sync_groups(
                groups,
                namespace=namespace,
                organization_id=organization_id,
                prune=bool(options.get("prune")),
                dry_run=self.dry_run,
            )
        except SyncAborted as exc:
            raise CommandError(str(exc)) from exc
        for line in report.items:
            self.detail(("would " if self.dry_run else "") + line)
        self.info(report.summary())

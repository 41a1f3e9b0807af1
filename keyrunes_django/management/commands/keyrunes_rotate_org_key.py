"""``manage.py keyrunes_rotate_org_key``: rotate an organization's key through the admin API."""

from __future__ import annotations

import hashlib
from argparse import ArgumentParser
from typing import Any

from django.core.management.base import CommandError

from keyrunes_django.conf import keyrunes_settings
from keyrunes_django.exceptions import AuthenticationFailed, KeyrunesError, PermissionDenied
from keyrunes_django.management.commands._common import KeyrunesCommand
from keyrunes_django.tokens import forget_organization_key


def fingerprint(key: str) -> str:
    """How a key is shown when it must not be: ``sha256:<hex>``."""
    return "sha256:" + hashlib.sha256(key.encode("utf-8")).hexdigest()


class Command(KeyrunesCommand):
    help = (
        "Rotate an organization key (POST /api/admin/organizations/{id}/rotate-key) as the "
        'service account KEYRUNES["SERVICE_ACCOUNT"] (needs the superadmin group). The old key '
        "stops working at once. Prints the new key's sha256 fingerprint, or the key itself "
        "with --show-key."
    )
    dry_run_help = "Check the organization and the service account, but rotate nothing."

    def add_arguments(self, parser: ArgumentParser) -> None:
        super().add_arguments(parser)
        parser.add_argument(
            "--organization-id",
            type=int,
            help="Organization whose key to rotate. Default: ORGANIZATION_SCOPE, else the "
            "organization of the configured NAMESPACE.",
        )
        parser.add_argument(
            "--show-key",
            action="store_true",
            help="Print the new key itself (by default only its sha256 fingerprint).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        self.setup(options)
        from keyrunes_django.client import get_client

        token = self.service_token()
        _namespace, organization_id = self.resolve_scope(token, options.get("organization_id"))
        client = get_client()
        # The server answers 200 even for an unknown id (with a key stored
        # nowhere), so check the id first when the account may list organizations.
        try:
            known = {org.organization_id: org for org in client.list_organizations(token)}
        except PermissionDenied:
            known = None
        except KeyrunesError as exc:
            raise self.admin_error("Listing organizations", exc) from exc
        if known is not None and organization_id not in known:
            raise CommandError(f"Organization {organization_id} does not exist.")
        if self.dry_run:
            self.info(f"Would rotate the key of organization {organization_id} (dry run).")
            return
        try:
            result = client.rotate_organization_key(token, organization_id)
        except KeyrunesError as exc:
            raise self.admin_error("Rotating the key", exc) from exc
        old = known[organization_id].secret_key if known is not None else None
        if old:
            # Every instance that shares the cache asks the shared record of a key
            # before trusting its own memory, so dropping it ends the old key there too.
            forget_organization_key(old)
        shown = result.secret_key if options.get("show_key") else fingerprint(result.secret_key)
        self.info(f"Rotated the key of organization {result.organization_id}.")
        label = "New key" if options.get("show_key") else "New key fingerprint"
        if self.verbosity >= 1:
            self.stdout.write(f"{label}: {shown}")
        if _configured_key_refused(client):
            self.warn(
                "KEYRUNES['ORGANIZATION_KEY'] is now refused (it was this organization's old "
                "key): update it and restart the service."
            )
        if not options.get("show_key"):
            self.info("The old key no longer works. Use --show-key to print the new one.")


def _configured_key_refused(client: Any) -> bool:
    """Whether the configured ORGANIZATION_KEY is refused by Keyrunes (401)."""
    key = keyrunes_settings.ORGANIZATION_KEY
    if not key:
        return False
    try:
        client.verify_org_key(key)
    except AuthenticationFailed:
        return True
    except KeyrunesError:
        # Includes the 500 some server versions answer for a *valid* key.
        return False
    return False

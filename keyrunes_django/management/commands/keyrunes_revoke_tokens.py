"""``manage.py keyrunes_revoke_tokens``: sign a user out everywhere."""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import CommandError

from keyrunes_django.management.commands._common import KeyrunesCommand
from keyrunes_django.revocation import Subject, revoke_user_tokens


class Command(KeyrunesCommand):
    help = (
        "Refuse every Keyrunes token of a user issued before now, on every instance that "
        "shares the cache (sessions, bearer tokens in local and remote mode). Name the user by "
        "local username, or by remote id with --remote-id (and --namespace)."
    )
    dry_run_help = "Find the user, but record nothing."

    def add_arguments(self, parser: ArgumentParser) -> None:
        super().add_arguments(parser)
        who = parser.add_mutually_exclusive_group(required=True)
        who.add_argument("username", nargs="?", help="The local user's USERNAME_FIELD value.")
        who.add_argument("--remote-id", type=int, help="The Keyrunes user id.")
        parser.add_argument(
            "--namespace",
            help="Namespace of --remote-id. Default: KEYRUNES['NAMESPACE'].",
        )
        parser.add_argument("--reason", default="command", help="Recorded with the revocation.")

    def handle(self, *args: Any, **options: Any) -> None:
        self.setup(options)
        subject = self._subject(options)
        label = options.get("username") or f"remote user {options.get('remote_id')}"
        if self.dry_run:
            self.info(f"Would revoke the tokens of {label} (dry run).")
            return
        not_before = revoke_user_tokens(subject, reason=str(options["reason"]))
        if not_before is None:
            raise CommandError(f"{label} is not a Keyrunes user (no mirrored identity).")
        self.info(f"Tokens of {label} issued before {not_before.isoformat()} are refused.")

    def _subject(self, options: dict[str, Any]) -> Any:
        from keyrunes_django.tenancy import namespace

        remote_id = options.get("remote_id")
        if remote_id is not None:
            return Subject(str(options.get("namespace") or namespace()), int(remote_id))
        user_model = get_user_model()
        try:
            return user_model._default_manager.get_by_natural_key(options["username"])
        except user_model.DoesNotExist:
            raise CommandError(f"No local user {options['username']!r}.") from None

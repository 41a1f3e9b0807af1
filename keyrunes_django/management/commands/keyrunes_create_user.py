"""``manage.py keyrunes_create_user``: create a Keyrunes user through the admin API."""

from __future__ import annotations

import getpass
import sys
from argparse import ArgumentParser, BooleanOptionalAction
from typing import Any

from django.core.management.base import CommandError

from keyrunes_django.exceptions import KeyrunesError
from keyrunes_django.management.commands._common import KeyrunesCommand

MIN_PASSWORD_BYTES = 8


class Command(KeyrunesCommand):
    help = (
        "Create a user in Keyrunes (POST /api/admin/user) as the service account "
        'KEYRUNES["SERVICE_ACCOUNT"]. The password is read from --password, from stdin '
        "with --password-stdin, or prompted for; it is never printed."
    )
    dry_run_help = "Check the arguments and the service account, but create nothing."

    def add_arguments(self, parser: ArgumentParser) -> None:
        super().add_arguments(parser)
        parser.add_argument("--email", required=True, help="E-mail address of the new user.")
        parser.add_argument("--username", required=True, help="Username (at most 50 characters).")
        source = parser.add_mutually_exclusive_group()
        source.add_argument(
            "--password",
            help="Password (at least 8 bytes). Visible in the process list: prefer "
            "--password-stdin or the prompt.",
        )
        source.add_argument(
            "--password-stdin",
            action="store_true",
            help="Read the password from the first line of standard input.",
        )
        parser.add_argument(
            "--group",
            action="append",
            dest="groups",
            metavar="NAME",
            help="Keyrunes group to put the user in; repeat for several. "
            "Default: the server's (users).",
        )
        parser.add_argument(
            "--organization-id",
            type=int,
            help="Organization to create the user in. Default: ORGANIZATION_SCOPE, "
            "else the organization of the configured NAMESPACE.",
        )
        parser.add_argument(
            "--first-login",
            action=BooleanOptionalAction,
            default=None,
            help="Require (--first-login) or not (--no-first-login) a password change at "
            "first login. Default: the server's (required).",
        )

    def _password(self, options: dict[str, Any]) -> str:
        if options.get("password"):
            password = str(options["password"])
        elif options.get("password_stdin"):
            password = sys.stdin.readline().rstrip("\r\n")
        elif sys.stdin.isatty():
            password = getpass.getpass("Password: ")
            if getpass.getpass("Password (again): ") != password:
                raise CommandError("The passwords do not match.")
        else:
            raise CommandError(
                "No password: pass --password, --password-stdin, or run in a terminal."
            )
        if len(password.encode("utf-8")) < MIN_PASSWORD_BYTES:
            raise CommandError("The password must be at least 8 bytes long.")
        return password

    def handle(self, *args: Any, **options: Any) -> None:
        self.setup(options)
        password = self._password(options)
        groups: list[str] | None = options.get("groups")
        token = self.service_token()
        _namespace, organization_id = self.resolve_scope(token, options.get("organization_id"))
        group_text = ", ".join(groups) if groups else "server default"
        target = f"{options['username']} <{options['email']}> in organization {organization_id}"
        if self.dry_run:
            self.info(f"Would create {target} (groups: {group_text}). Dry run: nothing created.")
            return
        from keyrunes_django.client import get_client

        try:
            user = get_client().create_user(
                token,
                organization_id=organization_id,
                email=options["email"],
                username=options["username"],
                password=password,
                groups=groups,
                first_login=options.get("first_login"),
            )
        except KeyrunesError as exc:
            raise self.admin_error("Creating the user", exc) from exc
        self.info(
            f"Created user {user.username} (user_id {user.user_id}, namespace {user.namespace}, "
            f"organization {user.organization_id}, groups: {', '.join(user.groups) or '-'}, "
            f"first_login: {user.first_login})."
        )
        self.debug(f"external_id: {user.external_id}")

"""``manage.py keyrunes_push_policies``: reconcile declared groups and policies with Keyrunes."""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import CommandError

from keyrunes_django.exceptions import KeyrunesError
from keyrunes_django.management.commands._common import KeyrunesCommand


class Command(KeyrunesCommand):
    help = (
        'Compare the groups and policies declared in KEYRUNES["GROUPS"] and '
        'KEYRUNES["POLICIES"] with the organization on the server, then create what is '
        "missing. Keyrunes has no route to update or delete a group or policy, so a declared "
        "item that differs from the server is reported and makes the command exit non-zero."
    )
    dry_run_help = "Only show the differences; create nothing."
    reports_json = True

    def add_arguments(self, parser: ArgumentParser) -> None:
        super().add_arguments(parser)
        parser.add_argument(
            "--organization-id",
            type=int,
            help="Organization to compare with. Default: ORGANIZATION_SCOPE, else the "
            "organization of the configured NAMESPACE.",
        )
        parser.add_argument(
            "--fail-on-undeclared",
            action="store_true",
            help="Also exit non-zero when the server has groups or policies that are not "
            "declared (by default they are only reported).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        self.setup(options)
        from keyrunes_django.client import get_client
        from keyrunes_django.policies import apply_policy_diff, compute_policy_diff

        client = get_client()
        token = self.service_token()
        _namespace, organization_id = self.resolve_scope(token, options.get("organization_id"))
        try:
            diff = self.admin(
                "Reading groups and policies",
                lambda t: compute_policy_diff(client, t, organization_id=organization_id),
            )
        except ImproperlyConfigured as exc:
            raise CommandError(str(exc)) from exc
        undeclared = len(diff.undeclared)
        applied = None
        if self.dry_run or not diff.missing:
            self._show(diff.format_report())
            failed = 0
            changed = len(diff.changed)
            if self.dry_run and diff.missing:
                self.info(f"Dry run: {len(diff.missing)} item(s) would be created.")
        else:
            try:
                report = apply_policy_diff(diff, client, token)
            except KeyrunesError as exc:
                raise self.admin_error("Creating groups and policies", exc) from exc
            self._show(report.format_report())
            applied = report
            failed = len(report.failed)
            changed = len(diff.changed)
        problems = []
        if failed:
            problems.append(f"{failed} declared item(s) could not be created")
        if changed:
            problems.append(
                f"{changed} declared item(s) differ from the server and cannot be updated "
                "through the API"
            )
        if undeclared and options.get("fail_on_undeclared"):
            problems.append(f"{undeclared} item(s) on the server are not declared")
        if self.json_output:
            self.emit_json({"dry_run": self.dry_run, "diff": diff, "applied": applied})
        if problems:
            raise CommandError("; ".join(problems) + ".")

    def _show(self, text: str) -> None:
        # Items that match are listed at verbosity 2; everything else at 1.
        for line in text.splitlines():
            if line.startswith("  = "):
                self.detail(line)
            else:
                self.info(line)

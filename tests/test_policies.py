"""keyrunes_django.policies: declarations, system checks, diff and apply against the emulator."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from keyrunes_django.checks import check_settings
from keyrunes_django.client import get_client
from keyrunes_django.policies import (
    FieldChange,
    apply_policy_diff,
    check_declarations,
    compute_policy_diff,
    declared_groups,
    declared_policies,
)
from keyrunes_django.testing import KeyrunesEmulator

ADMIN = {"IDENTITY": "admin@example.com", "PASSWORD": "Admin123"}


def ids(messages: list[Any]) -> list[str]:
    return [m.id for m in messages]


# --------------------------------------------------------------- declarations


class TestDeclarationChecks:
    def test_valid_declarations_have_no_errors(self) -> None:
        groups = ["editors", {"name": "auditors", "description": "Audit team"}]
        policies = [
            {"name": "docs_read", "resource": "docs:*", "action": "read"},
            {
                "name": "docs_no_delete",
                "resource": "docs:*",
                "action": "delete",
                "effect": "Deny",
                "description": None,
                "conditions": {"ip": ["10.0.0.0/8"]},
            },
        ]
        assert check_declarations(groups, policies) == []
        assert check_declarations((), ()) == []

    @pytest.mark.parametrize(
        ("groups", "policies", "expected"),
        [
            ("editors", [], "keyrunes_django.E020"),
            ({"name": "x"}, [], "keyrunes_django.E020"),
            ([42], [], "keyrunes_django.E021"),
            ([{"description": "no name"}], [], "keyrunes_django.E021"),
            ([{"name": ""}], [], "keyrunes_django.E021"),
            ([{"name": "x" * 101}], [], "keyrunes_django.E021"),
            ([{"name": "x", "policies": []}], [], "keyrunes_django.E021"),
            ([{"name": "x", "description": 3}], [], "keyrunes_django.E021"),
            (["a", {"name": "a"}], [], "keyrunes_django.E022"),
            ([], None, "keyrunes_django.E023"),
            ([], ["docs_read"], "keyrunes_django.E024"),
            ([], [{"name": "p", "resource": "r"}], "keyrunes_django.E024"),
            ([], [{"name": "p", "resource": "", "action": "a"}], "keyrunes_django.E024"),
            ([], [{"name": "p", "resource": "r", "action": "a", "effect": "ALLOW"}],
             "keyrunes_django.E024"),
            ([], [{"name": "p", "resource": "r" * 256, "action": "a"}], "keyrunes_django.E024"),
            ([], [{"name": "p", "resource": "r", "action": "a", "conditions": {1, 2}}],
             "keyrunes_django.E024"),
            ([], [{"name": "p", "resource": "r", "action": "a", "group": "x"}],
             "keyrunes_django.E024"),
            (
                [],
                [{"name": "p", "resource": "r", "action": "a"}] * 2,
                "keyrunes_django.E025",
            ),
        ],
    )
    def test_each_problem_has_its_id(self, groups: Any, policies: Any, expected: str) -> None:
        assert expected in ids(check_declarations(groups, policies))

    def test_registered_with_the_settings_checks(self) -> None:
        with override_settings(KEYRUNES={"BASE_URL": "http://127.0.0.1:9", "GROUPS": "oops"}):
            assert "keyrunes_django.E020" in ids(check_settings())
        with override_settings(KEYRUNES={"BASE_URL": "http://127.0.0.1:9", "GROUPS": ["a"]}):
            assert not [i for i in ids(check_settings()) if i.startswith("keyrunes_django.E02")]

    def test_normalised(self) -> None:
        declared = {
            "BASE_URL": "http://127.0.0.1:9",
            "GROUPS": ["editors", {"name": "auditors", "description": "Audit"}],
            "POLICIES": [{"name": "p", "resource": "r", "action": "a"}],
        }
        with override_settings(KEYRUNES=declared):
            assert declared_groups() == [
                {"name": "editors", "description": None},
                {"name": "auditors", "description": "Audit"},
            ]
            assert declared_policies() == [
                {
                    "name": "p",
                    "resource": "r",
                    "action": "a",
                    "effect": "Allow",
                    "description": None,
                    "conditions": None,
                }
            ]

    def test_invalid_declarations_raise(self) -> None:
        bad_policy = {"BASE_URL": "http://x", "POLICIES": [{"name": "p"}]}
        with override_settings(KEYRUNES=bad_policy), pytest.raises(ImproperlyConfigured):
            declared_policies()
        bad_group = {"BASE_URL": "http://x", "GROUPS": [1]}
        with override_settings(KEYRUNES=bad_group), pytest.raises(ImproperlyConfigured) as info:
            declared_groups()
        assert "E021" in str(info.value)


# ------------------------------------------------------------ against the server


def settings_for(kr: KeyrunesEmulator, **extra: Any) -> dict[str, Any]:
    return {
        "BASE_URL": kr.base_url,
        "JWT_SECRET": kr.jwt_secret,
        "RETRIES": 0,
        "BACKOFF": 0.0,
        "SERVICE_ACCOUNT": ADMIN,
        **extra,
    }


DOCS_READ = {"name": "docs_read", "resource": "docs:*", "action": "read", "effect": "Allow"}


@pytest.mark.django_db
class TestDiffAndApply:
    def test_create_missing_then_no_op(self, keyrunes: KeyrunesEmulator) -> None:
        acme = keyrunes.create_organization("Acme", "acme")
        declared = settings_for(
            keyrunes,
            GROUPS=["editors", {"name": "auditors", "description": "Audit"}],
            POLICIES=[DOCS_READ, {**DOCS_READ, "name": "docs_deny", "effect": "Deny",
                                  "conditions": {"note": "kept, never evaluated"}}],
        )
        with override_settings(KEYRUNES=declared):
            diff = compute_policy_diff(organization_id=acme.organization_id)
            assert sorted(i.label for i in diff.missing) == [
                "group 'auditors'",
                "group 'editors'",
                "policy 'docs_deny'",
                "policy 'docs_read'",
            ]
            # the tenant's built-in admin/users groups are not "undeclared"
            assert diff.undeclared == []
            assert diff.has_differences
            assert not diff.has_unapplicable_differences
            assert "+ group 'editors': missing on the server" in diff.format_report()

            report = apply_policy_diff(diff)
            assert report.ok
            assert len(report.created) == 4
            assert "4 created, 0 failed" in report.format_report()

            again = compute_policy_diff(organization_id=acme.organization_id)
            assert not again.has_differences
            assert len(again.unchanged) == 4
            assert "4 unchanged" in again.format_report()
            noop = apply_policy_diff(again)
            assert noop.created == []
            assert noop.ok
        with keyrunes.state.lock:
            ns = keyrunes.state.namespace("acme")
            assert ns.group_by_name("auditors") is not None

    def test_changed_fields_are_reported_not_applied(self, keyrunes: KeyrunesEmulator) -> None:
        keyrunes.create_policy("docs_read", "docs:*", "write", "Deny")
        keyrunes.create_group("editors", description="Old text")
        declared = settings_for(
            keyrunes,
            GROUPS=[{"name": "editors", "description": "Editors"}],
            POLICIES=[DOCS_READ],
        )
        keyrunes.reset_counters()
        with override_settings(KEYRUNES=declared):
            diff = compute_policy_diff()
            changed = {i.label: i for i in diff.changed}
            assert set(changed) == {"group 'editors'", "policy 'docs_read'"}
            assert changed["policy 'docs_read'"].changes == (
                FieldChange("action", "read", "write"),
                FieldChange("effect", "Allow", "Deny"),
            )
            assert changed["group 'editors'"].changes == (
                FieldChange("description", "Editors", "Old text"),
            )
            assert diff.has_unapplicable_differences
            text = diff.format_report()
            assert "action: server 'write', declared 'read'" in text
            assert "no route to update a policy" in text

            report = apply_policy_diff(diff)
        assert not report.ok
        assert report.created == []
        reasons = {item.label: why for item, why in report.not_applicable}
        assert "no route to update a policy" in reasons["policy 'docs_read'"]
        assert "no route to update a group" in reasons["group 'editors'"]
        assert "action: server 'write', declared 'read'" in report.format_report()
        # nothing was written to the server
        assert keyrunes.requests_to("/api/admin/policies", method="POST") == 0
        assert keyrunes.requests_to("/api/admin/groups", method="POST") == 0

    def test_undeclared_items_are_reported_as_not_deletable(
        self, keyrunes: KeyrunesEmulator
    ) -> None:
        keyrunes.create_group("legacy")
        keyrunes.create_policy("legacy_write", "legacy:*", "write")
        with override_settings(KEYRUNES=settings_for(keyrunes)):
            diff = compute_policy_diff()
            labels = {i.label for i in diff.undeclared}
            assert {"group 'legacy'", "policy 'legacy_write'", "policy 'full_access'"} <= labels
            assert "group 'superadmin'" not in labels
            assert "group 'users'" not in labels
            assert diff.has_unapplicable_differences
            report = apply_policy_diff(diff)
        reasons = {item.label: why for item, why in report.not_applicable}
        assert "no route to delete a group" in reasons["group 'legacy'"]
        assert "KEYRUNES['POLICIES']" in reasons["policy 'legacy_write'"]
        assert "is not declared; not applied" in report.format_report()
        assert "- group 'legacy': on the server but not declared." in diff.format_report()

    def test_explicit_client_and_token_and_failed_create(
        self, keyrunes: KeyrunesEmulator
    ) -> None:
        with override_settings(
            KEYRUNES=settings_for(keyrunes, SERVICE_ACCOUNT=None, POLICIES=[DOCS_READ])
        ):
            client = get_client()
            token = client.login("admin@example.com", "Admin123", "public").token
            diff = compute_policy_diff(client, token)
            assert diff.organization_id == 1  # the service account's organization
            assert [i.label for i in diff.missing] == ["policy 'docs_read'"]
            keyrunes.faults.add(r"^/api/admin/policies$", status=400, times=1)
            report = apply_policy_diff(diff, client, token)
        assert report.created == []
        assert [item.label for item, _ in report.failed] == ["policy 'docs_read'"]
        assert "could not create policy 'docs_read'" in report.format_report()
        assert not report.ok

    def test_organization_scope_is_the_default(self, keyrunes: KeyrunesEmulator) -> None:
        acme = keyrunes.create_organization("Acme", "acme")
        with override_settings(
            KEYRUNES=settings_for(keyrunes, ORGANIZATION_SCOPE=acme.organization_id,
                                  GROUPS=["editors"])
        ):
            diff = compute_policy_diff()
        assert diff.organization_id == acme.organization_id
        assert [i.label for i in diff.missing] == ["group 'editors'"]

    def test_nothing_anywhere(self, keyrunes: KeyrunesEmulator) -> None:
        empty = keyrunes.create_organization("Empty", "empty")
        with override_settings(KEYRUNES=settings_for(keyrunes)):
            diff = compute_policy_diff(organization_id=empty.organization_id)
        assert not diff.has_differences
        assert "0 missing, 0 changed, 0 undeclared, 0 unchanged." in diff.format_report()


def test_default_organization_of_an_unreadable_token() -> None:
    from keyrunes_django.policies import _default_organization_id

    assert _default_organization_id("not-a-jwt") == 1

"""``--format json`` on the reporting commands, and the version line of keyrunes_check."""

from __future__ import annotations

import io
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings

import keyrunes_django
from keyrunes_django.management.commands._common import json_data
from keyrunes_django.testing import KeyrunesEmulator
from tests.factories import run_command

pytestmark = pytest.mark.django_db

SERVICE = {"IDENTITY": "admin@example.com", "PASSWORD": "Admin123"}


@pytest.fixture
def kr(keyrunes: KeyrunesEmulator) -> Iterator[KeyrunesEmulator]:
    with override_settings(KEYRUNES={**settings.KEYRUNES, "SERVICE_ACCOUNT": SERVICE}):
        yield keyrunes


run = run_command


def run_json(name: str, *args: str, **options: Any) -> Any:
    out, _err = run(name, *args, "--format", "json", **options)
    return json.loads(out)  # stdout is the document and nothing else


def test_keyrunes_check_prints_the_package_version_first(kr: KeyrunesEmulator) -> None:
    out, _ = run("keyrunes_check")
    assert out.splitlines()[0] == f"keyrunes-django {keyrunes_django.__version__}"


def test_keyrunes_check_json(kr: KeyrunesEmulator) -> None:
    document = run_json("keyrunes_check", verbosity=2)
    assert document["version"] == keyrunes_django.__version__
    assert document["counts"]["FAIL"] == 0
    assert document["counts"]["OK"] == sum(f["status"] == "OK" for f in document["findings"])
    topics = {f["topic"] for f in document["findings"]}
    assert {"settings", "reachability", "health", "org key", "clock", "jwt secret"} <= topics
    text = json.dumps(document)
    assert kr.jwt_secret not in text
    assert kr.organization_key(1) not in text
    assert "Admin123" not in text


def test_keyrunes_check_json_on_failure_still_prints_the_document(
    kr: KeyrunesEmulator,
) -> None:
    out = io.StringIO()
    with (
        override_settings(KEYRUNES={**settings.KEYRUNES, "JWT_SECRET": "w" * 40}),
        pytest.raises(CommandError, match="1 failure"),
    ):
        call_command("keyrunes_check", "--format", "json", stdout=out, stderr=io.StringIO())
    document = json.loads(out.getvalue())
    failed = [f for f in document["findings"] if f["status"] == "FAIL"]
    assert [f["topic"] for f in failed] == ["jwt secret"]


def test_sync_users_json(kr: KeyrunesEmulator) -> None:
    kr.create_user("alice")
    document = run_json("keyrunes_sync_users", "--dry-run")
    assert document["namespace"] == "public"
    assert document["organization_id"] == 1
    report = document["report"]
    assert report["dry_run"] is True
    assert report["remote"] == 2  # alice and the superadmin
    assert report["created"] == 2
    assert "create alice" in report["items"]


def test_sync_users_json_counts_refusals_by_reason(kr: KeyrunesEmulator) -> None:
    kr.create_user("alice", groups=("users",))
    with override_settings(KEYRUNES={**settings.KEYRUNES, "DENY_GROUP": "users"}):
        report = run_json("keyrunes_sync_users")["report"]
    assert report["refused"] == {"denied_group": 2}


def test_sync_groups_json(kr: KeyrunesEmulator) -> None:
    kr.create_group("developers")
    report = run_json("keyrunes_sync_groups")["report"]
    assert report["created"] >= 1
    assert report["dry_run"] is False


def test_push_policies_json(kr: KeyrunesEmulator) -> None:
    declared = {
        "GROUPS": ["editors"],
        "POLICIES": [{"name": "docs_read", "resource": "docs:*", "action": "read"}],
    }
    with override_settings(KEYRUNES={**settings.KEYRUNES, **declared}):
        dry = run_json("keyrunes_push_policies", "--dry-run")
        applied = run_json("keyrunes_push_policies")
    assert dry["dry_run"] is True
    assert dry["applied"] is None
    missing = [
        item["name"]
        for item in dry["diff"]["groups"] + dry["diff"]["policies"]
        if item["status"] == "missing"
    ]
    assert sorted(missing) == ["docs_read", "editors"]
    assert sorted(item["name"] for item in applied["applied"]["created"]) == [
        "docs_read",
        "editors",
    ]
    assert kr.requests_to("/api/admin/policies", "POST") == 1


def test_json_is_only_on_the_reporting_commands() -> None:
    with pytest.raises(CommandError, match="unrecognized arguments: --format"):
        call_command("keyrunes_rotate_org_key", "--format", "json")


@dataclass
class Sample:
    counts: Counter[str] = field(default_factory=Counter)
    pairs: tuple[tuple[str, int], ...] = ()
    tags: frozenset[str] = frozenset()
    other: Any = None


def test_json_data_keeps_counter_counts_and_turns_the_rest_into_plain_types() -> None:
    sample = Sample(Counter({"denied_group": 3}), (("a", 1),), frozenset({"b", "a"}), object())
    data = json_data(sample)
    assert data["counts"] == {"denied_group": 3}
    assert data["pairs"] == [["a", 1]]
    assert data["tags"] == ["a", "b"]
    assert data["other"].startswith("<object object")
    json.dumps(data)

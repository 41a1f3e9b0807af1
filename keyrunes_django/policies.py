"""Policy registry: the groups and policies a service relies on, compared with the server.

A service declares what it expects in its settings::

    KEYRUNES = {
        "GROUPS": ["editors", {"name": "auditors", "description": "Read-only audit"}],
        "POLICIES": [
            {"name": "docs_read", "resource": "docs:*", "action": "read", "effect": "Allow"},
        ],
    }

:func:`compute_policy_diff` compares every field of every declared item with
what ``GET /api/admin/groups`` and ``/api/admin/policies`` return, and
:func:`apply_policy_diff` creates what is missing. Keyrunes has **no route to
update or delete** a group or a policy (nor to attach a policy), so changed and
undeclared items are reported, never "applied". Optional fields left out of a
declaration mean "empty" (``description``/``conditions`` null, ``effect``
``"Allow"``): the declaration is the whole truth about the item.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from django.core.checks import CheckMessage, Error
from django.core.exceptions import ImproperlyConfigured

from keyrunes_django.conf import keyrunes_settings
from keyrunes_django.identity import ADMIN_GROUP, SUPERADMIN_GROUP, USERS_GROUP

if TYPE_CHECKING:
    from keyrunes_django.client import KeyrunesClient

__all__ = [
    "BUILTIN_GROUPS",
    "ApplyReport",
    "FieldChange",
    "ItemDiff",
    "PolicyDiff",
    "apply_policy_diff",
    "check_declarations",
    "compute_policy_diff",
    "declared_groups",
    "declared_policies",
]

logger = logging.getLogger("keyrunes_django.policies")

Kind = Literal["group", "policy"]
Status = Literal["missing", "changed", "undeclared", "unchanged"]

GROUP_FIELDS: tuple[str, ...] = ("name", "description")
POLICY_FIELDS: tuple[str, ...] = (
    "name",
    "resource",
    "action",
    "effect",
    "description",
    "conditions",
)
EFFECTS = ("Allow", "Deny")
#: Groups every organization gets from the server; never reported as undeclared.
BUILTIN_GROUPS = frozenset({SUPERADMIN_GROUP, ADMIN_GROUP, USERS_GROUP})
NO_UPDATE_ROUTE = (
    "Keyrunes has no route to update a {kind}; change it on the server by hand "
    "(or create a {kind} under a new name) to match the declaration."
)
NO_DELETE_ROUTE = (
    "Keyrunes has no route to delete a {kind}; remove it on the server by hand, "
    "or declare it in KEYRUNES[{setting!r}]."
)

_LIMITS = {"name": 100, "resource": 255, "action": 100}
_ID = "keyrunes_django."


# --------------------------------------------------------------- declarations


def _group_problems(index: int, entry: Any) -> list[str]:
    where = f"KEYRUNES['GROUPS'][{index}]"
    if isinstance(entry, str):
        entry = {"name": entry}
    if not isinstance(entry, Mapping):
        return [f"{where} must be a group name or a dict, not {type(entry).__name__}."]
    problems = [f"{where} has unknown key {k!r}." for k in sorted(set(entry) - set(GROUP_FIELDS))]
    problems += _string_problems(where, entry, "name", required=True)
    problems += _string_problems(where, entry, "description", required=False)
    return problems


def _string_problems(
    where: str, entry: Mapping[str, Any], key: str, *, required: bool
) -> list[str]:
    value = entry.get(key)
    if value is None:
        return [f"{where} needs {key!r}."] if required else []
    if not isinstance(value, str) or (required and not value.strip()):
        return [f"{where}[{key!r}] must be a non-empty string."]
    limit = _LIMITS.get(key)
    if limit is not None and len(value) > limit:
        return [f"{where}[{key!r}] is longer than {limit} characters."]
    return []


def _policy_problems(index: int, entry: Any) -> list[str]:
    where = f"KEYRUNES['POLICIES'][{index}]"
    if not isinstance(entry, Mapping):
        return [f"{where} must be a dict, not {type(entry).__name__}."]
    problems = [f"{where} has unknown key {k!r}." for k in sorted(set(entry) - set(POLICY_FIELDS))]
    for key in ("name", "resource", "action"):
        problems += _string_problems(where, entry, key, required=True)
    problems += _string_problems(where, entry, "description", required=False)
    effect = entry.get("effect", "Allow")
    if effect not in EFFECTS:
        problems.append(
            f"{where}['effect'] must be 'Allow' or 'Deny' (exact case), not {effect!r}."
        )
    try:
        json.dumps(entry.get("conditions"))
    except (TypeError, ValueError):
        problems.append(f"{where}['conditions'] must be JSON-serializable.")
    return problems


def _sequence_problem(setting: str, value: Any) -> str | None:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        return f"KEYRUNES[{setting!r}] must be a list, not {type(value).__name__}."
    return None


def _duplicates(names: list[str]) -> list[str]:
    seen: set[str] = set()
    twice: set[str] = set()
    for name in names:
        (twice if name in seen else seen).add(name)
    return sorted(twice)


def check_declarations(groups: Any, policies: Any) -> list[CheckMessage]:
    """System-check messages (E020-E025) for the shape of ``GROUPS`` and ``POLICIES``."""
    messages: list[CheckMessage] = []
    problem = _sequence_problem("GROUPS", groups)
    if problem:
        messages.append(Error(problem, id=_ID + "E020"))
    else:
        for index, entry in enumerate(groups):
            for text in _group_problems(index, entry):
                messages.append(Error(text, id=_ID + "E021"))
        names = [_entry_name(e) for e in groups]
        for name in _duplicates([n for n in names if n]):
            messages.append(
                Error(f"KEYRUNES['GROUPS'] declares group {name!r} twice.", id=_ID + "E022")
            )
    problem = _sequence_problem("POLICIES", policies)
    if problem:
        messages.append(Error(problem, id=_ID + "E023"))
    else:
        for index, entry in enumerate(policies):
            for text in _policy_problems(index, entry):
                messages.append(
                    Error(text, hint="Fields: name, resource, action, effect, "
                          "description, conditions.", id=_ID + "E024")
                )
        names = [_entry_name(e) for e in policies]
        for name in _duplicates([n for n in names if n]):
            messages.append(
                Error(f"KEYRUNES['POLICIES'] declares policy {name!r} twice.", id=_ID + "E025")
            )
    return messages


def _entry_name(entry: Any) -> str | None:
    if isinstance(entry, str):
        return entry
    if isinstance(entry, Mapping) and isinstance(entry.get("name"), str):
        return str(entry["name"])
    return None


def _raise_if_invalid(groups: Any, policies: Any) -> None:
    errors = check_declarations(groups, policies)
    if errors:
        raise ImproperlyConfigured(" ".join(f"{e.msg} ({e.id})" for e in errors))


def declared_groups() -> list[dict[str, Any]]:
    """``KEYRUNES["GROUPS"]`` normalised to ``{"name", "description"}`` dicts."""
    groups = keyrunes_settings.GROUPS
    _raise_if_invalid(groups, ())
    result = []
    for entry in groups:
        item = {"name": entry} if isinstance(entry, str) else dict(entry)
        result.append({key: item.get(key) for key in GROUP_FIELDS})
    return result


def declared_policies() -> list[dict[str, Any]]:
    """``KEYRUNES["POLICIES"]`` normalised to dicts with every policy field."""
    policies = keyrunes_settings.POLICIES
    _raise_if_invalid((), policies)
    result = []
    for entry in policies:
        item = {key: entry.get(key) for key in POLICY_FIELDS}
        item["effect"] = entry.get("effect", "Allow")
        result.append(item)
    return result


# ----------------------------------------------------------------------- diff


@dataclass(frozen=True)
class FieldChange:
    """One field whose server value differs from the declaration."""

    field: str
    declared: Any
    server: Any

    def __str__(self) -> str:
        return f"{self.field}: server {self.server!r}, declared {self.declared!r}"


@dataclass(frozen=True)
class ItemDiff:
    """The comparison of one group or policy."""

    kind: Kind
    name: str
    status: Status
    declared: Mapping[str, Any] | None = None
    server: Mapping[str, Any] | None = None
    changes: tuple[FieldChange, ...] = ()

    @property
    def label(self) -> str:
        return f"{self.kind} {self.name!r}"


@dataclass
class PolicyDiff:
    """Declared groups and policies against one organization on the server."""

    organization_id: int
    groups: list[ItemDiff] = field(default_factory=list)
    policies: list[ItemDiff] = field(default_factory=list)

    @property
    def items(self) -> list[ItemDiff]:
        return [*self.groups, *self.policies]

    def _with(self, status: Status) -> list[ItemDiff]:
        return [item for item in self.items if item.status == status]

    @property
    def missing(self) -> list[ItemDiff]:
        return self._with("missing")

    @property
    def changed(self) -> list[ItemDiff]:
        return self._with("changed")

    @property
    def undeclared(self) -> list[ItemDiff]:
        return self._with("undeclared")

    @property
    def unchanged(self) -> list[ItemDiff]:
        return self._with("unchanged")

    @property
    def has_differences(self) -> bool:
        return bool(self.missing or self.changed or self.undeclared)

    @property
    def has_unapplicable_differences(self) -> bool:
        """Changed or undeclared items: the server's API cannot reconcile them."""
        return bool(self.changed or self.undeclared)

    def format_report(self) -> str:
        """A plain-text report, one line per item (plus one per changed field)."""
        lines = [f"Keyrunes groups and policies of organization {self.organization_id}:"]
        for item in self.items:
            lines += _describe(item)
        if not self.items:
            lines.append("  nothing declared, nothing on the server.")
        lines.append(
            f"{len(self.missing)} missing, {len(self.changed)} changed, "
            f"{len(self.undeclared)} undeclared, {len(self.unchanged)} unchanged."
        )
        return "\n".join(lines)


def _describe(item: ItemDiff) -> list[str]:
    setting = "GROUPS" if item.kind == "group" else "POLICIES"
    if item.status == "missing":
        return [f"  + {item.label}: missing on the server (can be created)."]
    if item.status == "unchanged":
        return [f"  = {item.label}: matches the declaration."]
    if item.status == "changed":
        lines = [f"  ~ {item.label}: differs from the declaration."]
        lines += [f"      {change}" for change in item.changes]
        lines.append("      " + NO_UPDATE_ROUTE.format(kind=item.kind))
        return lines
    return [
        f"  - {item.label}: on the server but not declared.",
        "      " + NO_DELETE_ROUTE.format(kind=item.kind, setting=setting),
    ]


def _compare(
    kind: Kind,
    fields: tuple[str, ...],
    declared: list[dict[str, Any]],
    server: list[dict[str, Any]],
) -> list[ItemDiff]:
    on_server = {item["name"]: item for item in server}
    result = []
    for item in declared:
        remote = on_server.get(item["name"])
        if remote is None:
            result.append(ItemDiff(kind, item["name"], "missing", declared=item))
            continue
        changes = tuple(
            FieldChange(name, item.get(name), remote.get(name))
            for name in fields
            if item.get(name) != remote.get(name)
        )
        status: Status = "changed" if changes else "unchanged"
        result.append(ItemDiff(kind, item["name"], status, item, remote, changes))
    declared_names = {item["name"] for item in declared}
    for remote in server:
        name = remote["name"]
        if name in declared_names or (kind == "group" and name in BUILTIN_GROUPS):
            continue
        result.append(ItemDiff(kind, name, "undeclared", server=remote))
    return result


def _default_organization_id(token: str) -> int:
    scope = keyrunes_settings.ORGANIZATION_SCOPE
    if isinstance(scope, int) and not isinstance(scope, bool):
        return scope
    import jwt

    # Our own service token: its organization is where the admin API acts by default.
    try:
        claims = jwt.decode(token, options={"verify_signature": False}, algorithms=["HS256"])
    except jwt.PyJWTError:
        return 1
    org = claims.get("organization_id")
    return org if isinstance(org, int) and not isinstance(org, bool) else 1


def _resolve(client: KeyrunesClient | None, token: str | None) -> tuple[KeyrunesClient, str]:
    if client is None:
        from keyrunes_django.client import get_client

        client = get_client()
    if token is None:
        from keyrunes_django.service_account import get_service_token

        token = get_service_token()
    return client, token


def compute_policy_diff(
    client: KeyrunesClient | None = None,
    token: str | None = None,
    *,
    organization_id: int | None = None,
) -> PolicyDiff:
    """Compare ``KEYRUNES["GROUPS"]``/``["POLICIES"]`` with the server, field by field.

    ``token`` defaults to the service account's; ``organization_id`` to
    ``ORGANIZATION_SCOPE``, else the service account's organization.
    """
    groups = declared_groups()
    policies = declared_policies()
    client, token = _resolve(client, token)
    org = organization_id if organization_id is not None else _default_organization_id(token)
    server_groups = [
        {key: getattr(g, key) for key in GROUP_FIELDS} for g in client.list_groups(token, org)
    ]
    server_policies = [
        {key: getattr(p, key) for key in POLICY_FIELDS} for p in client.list_policies(token, org)
    ]
    return PolicyDiff(
        organization_id=org,
        groups=_compare("group", GROUP_FIELDS, groups, server_groups),
        policies=_compare("policy", POLICY_FIELDS, policies, server_policies),
    )


# ---------------------------------------------------------------------- apply


@dataclass
class ApplyReport:
    """What :func:`apply_policy_diff` did, and what it could not do."""

    organization_id: int
    created: list[ItemDiff] = field(default_factory=list)
    failed: list[tuple[ItemDiff, str]] = field(default_factory=list)
    not_applicable: list[tuple[ItemDiff, str]] = field(default_factory=list)
    unchanged: list[ItemDiff] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Everything declared now exists and matches (nothing failed or left over)."""
        return not self.failed and not self.not_applicable

    def format_report(self) -> str:
        lines = [f"Keyrunes groups and policies of organization {self.organization_id}:"]
        lines += [f"  + created {item.label}." for item in self.created]
        lines += [f"  ! could not create {item.label}: {why}" for item, why in self.failed]
        for item, why in self.not_applicable:
            verb = "differs" if item.status == "changed" else "is not declared"
            lines.append(f"  ~ {item.label} {verb}; not applied: {why}")
            lines += [f"      {change}" for change in item.changes]
        lines += [f"  = {item.label}: matches the declaration." for item in self.unchanged]
        lines.append(
            f"{len(self.created)} created, {len(self.failed)} failed, "
            f"{len(self.not_applicable)} not applicable, {len(self.unchanged)} unchanged."
        )
        return "\n".join(lines)


def apply_policy_diff(
    diff: PolicyDiff,
    client: KeyrunesClient | None = None,
    token: str | None = None,
) -> ApplyReport:
    """Create the missing groups and policies; report what the API cannot change."""
    from keyrunes_django.exceptions import KeyrunesError

    client, token = _resolve(client, token)
    report = ApplyReport(organization_id=diff.organization_id)
    for item in diff.items:
        if item.status == "unchanged":
            report.unchanged.append(item)
        elif item.status == "changed":
            report.not_applicable.append((item, NO_UPDATE_ROUTE.format(kind=item.kind)))
        elif item.status == "undeclared":
            setting = "GROUPS" if item.kind == "group" else "POLICIES"
            report.not_applicable.append(
                (item, NO_DELETE_ROUTE.format(kind=item.kind, setting=setting))
            )
        else:
            declared = dict(item.declared or {})
            try:
                if item.kind == "group":
                    client.create_group(
                        token,
                        organization_id=diff.organization_id,
                        name=item.name,
                        description=declared.get("description"),
                    )
                else:
                    client.create_policy(
                        token,
                        organization_id=diff.organization_id,
                        name=item.name,
                        resource=declared["resource"],
                        action=declared["action"],
                        effect=declared.get("effect") or "Allow",
                        description=declared.get("description"),
                        conditions=declared.get("conditions"),
                    )
            except KeyrunesError as exc:
                logger.warning("could not create %s: %s", item.label, exc)
                report.failed.append((item, str(exc)))
            else:
                logger.info("created %s in organization %s", item.label, diff.organization_id)
                report.created.append(item)
    return report

"""Bulk mirroring of Keyrunes users and groups (the ``keyrunes_sync_*`` commands).

The rules are the login mapper's own (:func:`keyrunes_django.mapping.get_mapper`):
its pure functions (``check_identity``, ``user_fields``, ``flags``,
``group_plan``) decide what each user should look like, its in-memory steps
(``new_user``, ``new_record``, ``user_changes``, ``identity_record_changes``)
what changes, and this module only replaces the one-row-at-a-time writes of
:meth:`~keyrunes_django.mapping.UserMapper.mirror` by a fixed set of bulk
statements. The number of queries does not depend on the number of users (up
to the database's parameter limit per statement; beyond it each statement is
split in batches of thousands of rows).

Nothing is ever deleted for users: users gone remotely are deactivated
(``is_active=False``) and only when asked. Every write happens in one
transaction, after all checks passed, so an aborted sync changes nothing.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import Group
from django.db import connections, router, transaction
from django.db.models.constants import OnConflict
from django.utils import timezone

from keyrunes_django import signals
from keyrunes_django.conf import keyrunes_settings
from keyrunes_django.exceptions import KeyrunesError, MirrorRefused
from keyrunes_django.identity import VerifiedIdentity
from keyrunes_django.mapping import UserMapper, get_mapper, groups_by_name
from keyrunes_django.models import KeyrunesIdentity, MirroredGroup
from keyrunes_django.schemas import AdminUser
from keyrunes_django.schemas import Group as RemoteGroup

__all__ = [
    "GroupSyncReport",
    "SyncAborted",
    "UserSyncReport",
    "fetch_all",
    "sync_groups",
    "sync_users",
]

Progress = Callable[[str, int, int], None]

#: Default ``--max-shrink``: abort when the listing has this many percent fewer users.
DEFAULT_MAX_SHRINK = 10.0


class SyncAborted(KeyrunesError):
    """The sync stopped before writing anything (listing failed, shrank too much...)."""


@dataclass
class UserSyncReport:
    """Counts of one user sync; ``items`` holds one line per affected user."""

    remote: int = 0
    created: int = 0
    linked: int = 0
    updated: int = 0
    unchanged: int = 0
    deactivated: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    groups_created: int = 0
    groups_marked: int = 0
    memberships_added: int = 0
    memberships_removed: int = 0
    dry_run: bool = False
    items: list[str] = field(default_factory=list)

    def summary(self) -> str:
        refused = sum(self.refused.values())
        reasons = ", ".join(f"{k}: {v}" for k, v in sorted(self.refused.items()))
        prefix = "Dry run, would have: " if self.dry_run else ""
        return (
            f"{prefix}{self.remote} remote users: {self.created} created, {self.linked} linked, "
            f"{self.updated} updated, {self.unchanged} unchanged, {self.deactivated} "
            f"deactivated, {refused} refused{f' ({reasons})' if reasons else ''}; groups: "
            f"{self.groups_created} created, {self.groups_marked} marked as mirrored; "
            f"memberships: {self.memberships_added} added, {self.memberships_removed} removed."
        )


@dataclass
class GroupSyncReport:
    """Counts of one group sync."""

    remote: int = 0
    created: int = 0
    marked: int = 0
    unchanged: int = 0
    skipped: int = 0
    pruned: int = 0
    dry_run: bool = False
    items: list[str] = field(default_factory=list)

    def summary(self) -> str:
        prefix = "Dry run, would have: " if self.dry_run else ""
        return (
            f"{prefix}{self.remote} remote groups: {self.created} created, {self.marked} marked "
            f"as mirrored, {self.unchanged} unchanged, {self.skipped} not mirrored by the "
            f"settings, {self.pruned} pruned."
        )


def fetch_all(fetch_page: Callable[[int], Sequence[Any] | tuple[Sequence[Any], bool]]) -> list[Any]:
    """Collect a listing that may be paged.

    ``fetch_page(n)`` returns page ``n`` (from 0) either as a sequence or as
    ``(items, has_more)``. A plain sequence is one complete listing (Keyrunes
    does not page ``/api/admin/users`` today); a tuple keeps the loop going
    while ``has_more`` is true.
    """
    items: list[Any] = []
    page = 0
    while True:
        answer = fetch_page(page)
        if isinstance(answer, tuple):
            chunk, has_more = answer
        else:
            chunk, has_more = answer, False
        items.extend(chunk)
        if not has_more or not chunk:
            return items
        page += 1


# ------------------------------------------------------------------ helpers


@contextlib.contextmanager
def _real_sqlite_parameter_limit(alias: str) -> Iterator[None]:
    """Batch SQLite statements by the library's real parameter limit.

    Django 5.2 assumes SQLite's historical 999 variables per statement, which
    splits a bulk insert of a few hundred users into many statements; SQLite
    >= 3.32 allows 32766 and Python 3.11+ can ask. Restored on exit.
    """
    connection = connections[alias]
    features = connection.features
    if connection.vendor != "sqlite":
        yield
        return
    connection.ensure_connection()
    raw = connection.connection
    getlimit = getattr(raw, "getlimit", None)
    limit = getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) if getlimit else None
    had_own = "max_query_params" in vars(features)
    previous = features.max_query_params
    if limit and limit > previous:
        features.max_query_params = limit
    try:
        yield
    finally:
        if had_own:
            features.max_query_params = previous
        else:
            with contextlib.suppress(AttributeError):
                del features.max_query_params


def _chunks(values: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(values), max(1, size)):
        yield values[start : start + size]


def _param_chunk(alias: str) -> int:
    limit = connections[alias].features.max_query_params
    return max(1, int(limit) - 10) if limit else 10_000


def _probe_identity(name: str, namespace: str, organization_id: int) -> VerifiedIdentity:
    """A stand-in identity holding one group, to run a group name through the mapper."""
    return VerifiedIdentity(
        user_id=0,
        username="",
        email="",
        namespace=namespace,
        organization_id=organization_id,
        groups=(name,),
        source="sync",
    )


def _note(report: UserSyncReport | GroupSyncReport, line: str) -> None:
    report.items.append(line)


def _create_groups(names: list[str]) -> dict[str, Any]:
    """Create the groups ``names`` in one statement; their ids by name."""
    created = Group.objects.bulk_create([Group(name=name) for name in names])
    ids = {group.name: group.pk for group in created}
    if any(pk is None for pk in ids.values()):
        # Backends without INSERT ... RETURNING set no ids: read them back.
        ids = dict(Group.objects.filter(name__in=names).values_list("name", "pk"))
    return ids


def _mark_mirrored(
    groups: list[tuple[Any, str]], *, namespace: str, organization_id: int, now: datetime
) -> None:
    """Mark (group id, remote group name) pairs as mirrored, in one statement."""
    MirroredGroup.objects.bulk_create(
        [
            MirroredGroup(
                group_id=group_id,
                remote_name=remote_name,
                namespace=namespace,
                organization_id=organization_id,
                last_synced_at=now,
            )
            for group_id, remote_name in groups
        ]
    )


# ------------------------------------------------------------------ groups


def sync_groups(
    remote_groups: Iterable[RemoteGroup | str],
    *,
    namespace: str,
    organization_id: int,
    prune: bool = False,
    dry_run: bool = False,
    mapper: UserMapper | None = None,
) -> GroupSyncReport:
    """Mirror remote groups into Django groups through the mapper's group rules.

    Each remote group becomes the local group(s) ``GROUP_MAP`` /
    ``MIRROR_GROUPS`` give it at login, marked with a :class:`MirroredGroup`.
    With ``prune``, groups marked as mirrored from this namespace whose remote
    group no longer exists are deleted; groups without a marker (local-only)
    are never touched.
    """
    mapper = mapper or get_mapper()
    names = sorted({g if isinstance(g, str) else g.name for g in remote_groups})
    report = GroupSyncReport(remote=len(names), dry_run=dry_run)
    if prune and not names:
        raise SyncAborted("The remote group listing is empty; refusing to prune every group.")
    plan: dict[str, str] = {}
    for name in names:
        local = mapper.group_plan(_probe_identity(name, namespace, organization_id)) or {}
        if not local:
            report.skipped += 1
            _note(report, f"skip {name} (not mirrored by MIRROR_GROUPS/GROUP_MAP)")
        for local_name, remote_name in local.items():
            plan.setdefault(local_name, remote_name)

    now = timezone.now()
    existing = groups_by_name(plan)
    to_create = sorted(name for name in plan if name not in existing)
    to_mark = sorted(name for name, (_pk, marker) in existing.items() if not marker)
    stale: list[MirroredGroup] = []
    if prune:
        remote_names = set(names)
        stale = [
            marker
            for marker in MirroredGroup.objects.filter(namespace=namespace).select_related("group")
            if marker.remote_name not in remote_names
        ]
    report.created = len(to_create)
    report.marked = len(to_mark)
    report.unchanged = len(plan) - len(to_create) - len(to_mark)
    report.pruned = len(stale)
    for name in to_create:
        _note(report, f"create {name} (from {plan[name]})")
    for name in to_mark:
        _note(report, f"mark {name} as mirrored (from {plan[name]})")
    for marker in stale:
        _note(report, f"prune {marker.group.name} (remote {marker.remote_name} is gone)")
    if dry_run:
        return report

    with transaction.atomic():
        ids = _create_groups(to_create)
        ids.update({name: existing[name][0] for name in to_mark})
        _mark_mirrored(
            [(ids[name], plan[name]) for name in to_create + to_mark],
            namespace=namespace,
            organization_id=organization_id,
            now=now,
        )
        MirroredGroup.objects.filter(
            group__name__in=[n for n in plan if n in existing and existing[n][1]]
        ).update(last_synced_at=now)
        if stale:
            Group.objects.filter(pk__in=[marker.group_id for marker in stale]).delete()
    return report


# ------------------------------------------------------------------- users


@dataclass
class _Planned:
    identity: VerifiedIdentity
    fields: dict[str, Any]
    flags: dict[str, bool]
    groups: dict[str, str] | None


def sync_users(
    remote_users: Iterable[AdminUser | VerifiedIdentity],
    *,
    namespace: str,
    organization_id: int,
    deactivate_missing: bool = False,
    max_shrink: float | None = DEFAULT_MAX_SHRINK,
    dry_run: bool = False,
    mapper: UserMapper | None = None,
    progress: Progress | None = None,
) -> UserSyncReport:
    """Mirror a complete remote user listing in bulk.

    Raises :class:`SyncAborted`, before writing anything, when the listing has
    more than ``max_shrink`` percent fewer users than the active users mirrored
    from this namespace (``None`` disables the check).
    """
    mapper = mapper or get_mapper()
    user_model = get_user_model()
    alias = router.db_for_write(user_model)
    identities = [
        u if isinstance(u, VerifiedIdentity) else u.to_identity(namespace, organization_id)
        for u in remote_users
    ]
    report = UserSyncReport(remote=len(identities), dry_run=dry_run)
    with _real_sqlite_parameter_limit(alias):
        records = {
            record.remote_user_id: record
            for record in KeyrunesIdentity.objects.filter(namespace=namespace).select_related(
                "user"
            )
        }
        active = sum(1 for record in records.values() if record.user.is_active)
        if max_shrink is not None and active:
            floor = active * (1 - max_shrink / 100)
            if len(identities) < floor:
                raise SyncAborted(
                    f"The remote listing has {len(identities)} users but {active} active users "
                    f"are mirrored from namespace {namespace!r}: it shrank by "
                    f"{100 * (active - len(identities)) / active:.1f}%, more than the "
                    f"{max_shrink:g}% allowed (--max-shrink). Nothing was changed."
                )
        plans = _plan_users(mapper, identities, report, progress)
        return _apply_users(
            mapper,
            user_model,
            alias,
            plans,
            records,
            report,
            namespace=namespace,
            organization_id=organization_id,
            deactivate_missing=deactivate_missing,
            listed={identity.user_id for identity in identities},
            progress=progress,
        )


def _plan_users(
    mapper: UserMapper,
    identities: list[VerifiedIdentity],
    report: UserSyncReport,
    progress: Progress | None,
) -> list[_Planned]:
    plans: list[_Planned] = []
    seen: set[int] = set()
    total = len(identities)
    for index, identity in enumerate(identities, 1):
        if identity.user_id in seen:
            continue  # a paged listing may repeat a user across pages
        seen.add(identity.user_id)
        try:
            mapper.check_identity(identity)
        except MirrorRefused as exc:
            report.refused[exc.reason] += 1
            _note(report, f"refuse {identity.username} ({exc.reason})")
            continue
        plans.append(
            _Planned(
                identity=identity,
                fields=mapper.user_fields(identity),
                flags=mapper.flags(identity),
                groups=mapper.group_plan(identity),
            )
        )
        if progress is not None and (index % 500 == 0 or index == total):
            progress("mapping", index, total)
    return plans


def _apply_users(
    mapper: UserMapper,
    user_model: Any,
    alias: str,
    plans: list[_Planned],
    records: dict[int, KeyrunesIdentity],
    report: UserSyncReport,
    *,
    namespace: str,
    organization_id: int,
    deactivate_missing: bool,
    listed: set[int],
    progress: Progress | None,
) -> UserSyncReport:
    username_field = user_model.USERNAME_FIELD
    link_existing = bool(keyrunes_settings.LINK_EXISTING_USERS)
    now = timezone.now()
    mapper_class = type(mapper)

    # Every local login name -> (pk, linked identity or None): one query.
    taken: dict[Any, tuple[Any, tuple[str, int] | None]] = {}
    for pk, login, ns, remote_id in user_model._default_manager.values_list(
        "pk", username_field, "keyrunes_identity__namespace", "keyrunes_identity__remote_user_id"
    ):
        taken[login] = (pk, (ns, remote_id) if ns is not None else None)
    link_targets: dict[Any, AbstractBaseUser] = {}

    new_users: list[tuple[_Planned, AbstractBaseUser]] = []
    to_link: list[tuple[_Planned, Any]] = []
    changed_users: dict[Any, tuple[AbstractBaseUser, set[str]]] = {}
    changed_records: dict[int, tuple[KeyrunesIdentity, set[str]]] = {}
    planned_by_user: list[tuple[_Planned, Any]] = []  # (plan, user pk or new user object)

    for plan in plans:
        identity = plan.identity
        record = records.get(identity.user_id)
        if record is None:
            login = plan.fields.get(username_field)
            if not login:
                report.refused["no_username"] += 1
                _note(report, f"refuse {identity.username} (no {username_field})")
                continue
            owner = taken.get(login)
            if owner is not None:
                pk, linked = owner
                if linked is not None:
                    report.refused["username_taken"] += 1
                    _note(report, f"refuse {identity.username} (username_taken)")
                    continue
                if not link_existing:
                    report.refused["local_user_exists"] += 1
                    _note(report, f"refuse {identity.username} (local_user_exists)")
                    continue
                to_link.append((plan, pk))
                taken[login] = (pk, (identity.namespace, identity.user_id))
                continue
            user = mapper.new_user(identity, plan.fields, plan.flags)
            taken[login] = (None, (identity.namespace, identity.user_id))
            new_users.append((plan, user))
            _note(report, f"create {login}")
            continue
        user = record.user
        reactivated, record_reactivated = mapper.reactivation_changes(record, user)
        dirty = mapper.user_changes(user, identity, plan.fields, plan.flags) | reactivated
        if reactivated:
            _note(report, f"reactivate {user.get_username()}")
        if username_field in dirty:
            login = getattr(user, username_field)
            owner = taken.get(login)
            if owner is not None and owner[0] != user.pk:
                report.refused["username_taken"] += 1
                _note(report, f"refuse update of {identity.username} (username_taken)")
                continue
            taken[login] = (user.pk, (identity.namespace, identity.user_id))
        if dirty:
            changed_users[user.pk] = (user, dirty)
        record_dirty = mapper.identity_record_changes(record, identity) | record_reactivated
        if record_dirty or dirty:
            changed_records[record.pk] = (record, record_dirty)
        planned_by_user.append((plan, user.pk))

    # Existing unlinked local users taken over (LINK_EXISTING_USERS).
    if to_link:
        link_targets = {
            user.pk: user
            for user in user_model._default_manager.filter(pk__in=[pk for _p, pk in to_link])
        }
        for plan, pk in to_link:
            user = link_targets[pk]
            dirty = mapper.user_changes(user, plan.identity, plan.fields, plan.flags)
            if dirty:
                changed_users[user.pk] = (user, dirty)
            planned_by_user.append((plan, pk))
            _note(report, f"link {user.get_username()} to {plan.identity.username}")

    report.created = len(new_users)
    report.linked = len(to_link)
    report.updated = len(changed_users) - sum(1 for _p, pk in to_link if pk in changed_users)
    report.unchanged = len(planned_by_user) - len(to_link) - report.updated
    for user, dirty in changed_users.values():
        _note(report, f"update {user.get_username()} ({', '.join(sorted(dirty))})")

    # Deactivation of users gone remotely.
    to_deactivate = []
    if deactivate_missing:
        gone = [
            record
            for remote_id, record in records.items()
            if remote_id not in listed and record.user.is_active
        ]
        for record in gone:
            record.user.is_active = False
            record.deactivated_at = now
            changed_records[record.pk] = (record, {"deactivated_at"})
            _note(report, f"deactivate {record.user.get_username()}")
        to_deactivate = [record.user for record in gone]
    report.deactivated = len(to_deactivate)

    # Groups: which local groups exist, which are mirrored.
    wanted_names = sorted({name for plan in plans if plan.groups for name in plan.groups})
    remote_of: dict[str, str] = {}
    for plan in plans:
        for local, remote in (plan.groups or {}).items():
            remote_of.setdefault(local, remote)
    group_rows = groups_by_name(wanted_names)
    missing_groups = [name for name in wanted_names if name not in group_rows]
    unmarked = [name for name, (_pk, marker) in group_rows.items() if not marker]
    report.groups_created = len(missing_groups)
    report.groups_marked = len(missing_groups) + len(unmarked)
    mirrored_ids = set(MirroredGroup.objects.values_list("group_id", flat=True))

    if report.dry_run:
        report.memberships_added, report.memberships_removed = _membership_counts(
            user_model, planned_by_user, new_users, group_rows, mirrored_ids
        )
        return report

    through: Any = user_model.groups.through
    user_column = _through_user_column(user_model)
    chunk = _param_chunk(alias)
    with transaction.atomic(using=alias):
        if progress is not None:
            progress("writing", 0, 1)
        created_users = [user for _p, user in new_users]
        if created_users:
            _fast_insert(alias, user_model, created_users)
            # executemany returns no ids: read them back by login name (one query).
            found = dict(user_model._default_manager.values_list(username_field, "pk"))
            for user in created_users:
                user.pk = found[getattr(user, username_field)]
                user._state.adding = False
                user._state.db = alias
        _fast_insert(
            alias,
            KeyrunesIdentity,
            [mapper.new_record(user, plan.identity, now) for plan, user in new_users]
            + [mapper.new_record(link_targets[pk], plan.identity, now) for plan, pk in to_link],
        )
        for plan, user in new_users:
            planned_by_user.append((plan, user.pk))

        updates = [user for user, _d in changed_users.values()] + to_deactivate
        update_fields = sorted(
            {name for _u, dirty in changed_users.values() for name in dirty}
            | ({"is_active"} if to_deactivate else set())
        )
        if updates:
            user_model._default_manager.bulk_update(updates, update_fields)
        if changed_records:
            record_objs = []
            record_fields: set[str] = {"last_synced_at"}
            for record, dirty in changed_records.values():
                record.last_synced_at = now
                record_fields |= dirty
                record_objs.append(record)
            KeyrunesIdentity.objects.bulk_update(record_objs, sorted(record_fields))

        # Groups, markers, then memberships.
        group_rows.update((name, (pk, None)) for name, pk in _create_groups(missing_groups).items())
        _mark_mirrored(
            [(group_rows[name][0], remote_of[name]) for name in missing_groups + unmarked],
            namespace=namespace,
            organization_id=organization_id,
            now=now,
        )
        mirrored_ids |= {group_rows[name][0] for name in missing_groups + unmarked}
        add, remove = _membership_diff(
            through, user_column, planned_by_user, group_rows, mirrored_ids
        )
        _insert_memberships(alias, through, user_column, add)
        for ids in _chunks(remove, chunk):
            through.objects.filter(pk__in=list(ids)).delete()
        report.memberships_added = len(add)
        report.memberships_removed = len(remove)

    if progress is not None:
        progress("writing", 1, 1)
    if signals.user_mirrored.has_listeners():
        identity_of = {pk: plan.identity for plan, pk in planned_by_user}
        for plan, user in new_users:
            signals.user_mirrored.send(
                sender=mapper_class, user=user, identity=plan.identity, created=True, changed=True
            )
        for user, _dirty in changed_users.values():
            signals.user_mirrored.send(
                sender=mapper_class,
                user=user,
                identity=identity_of[user.pk],
                created=False,
                changed=True,
            )
    return report


def _fast_insert(alias: str, model: Any, objs: list[Any]) -> None:
    """INSERT model instances with one ``executemany`` (no ids are set on them).

    Values go through each field's ``pre_save``/``get_db_prep_save`` as in
    ``bulk_create``; only the per-row SQL compilation is skipped, which was
    most of a large sync's time.
    """
    if not objs:
        return
    connection = connections[alias]
    ops = connection.ops
    meta = model._meta
    fields = [f for f in meta.concrete_fields if not (f.primary_key and f.auto_created)]
    fields = [f for f in fields if f is not meta.pk or getattr(objs[0], f.attname) is not None]
    columns = ", ".join(ops.quote_name(f.column) for f in fields)
    placeholders = ", ".join(["%s"] * len(fields))
    # Identifiers come from the model's meta, quoted; values are parameters.
    table = ops.quote_name(meta.db_table)
    sql = f"INSERT INTO {table} ({columns}) VALUES ({placeholders})"  # noqa: S608
    rows = [
        tuple(f.get_db_prep_save(f.pre_save(obj, True), connection) for f in fields)
        for obj in objs
    ]
    with connection.cursor() as cursor:
        cursor.executemany(sql, rows)


def _insert_memberships(
    alias: str, through: Any, user_column: str, rows: list[tuple[Any, Any]]
) -> None:
    """Insert (user, group) rows with one ``executemany``, ignoring duplicates.

    ``bulk_create`` builds a model instance and compiles SQL per row, which
    for tens of thousands of memberships cost more than everything else.
    """
    if not rows:
        return
    connection = connections[alias]
    ops = connection.ops
    meta = through._meta
    user_col = meta.get_field(user_column).column
    group_col = meta.get_field("group").column
    sql = " ".join(
        part
        for part in (
            ops.insert_statement(on_conflict=OnConflict.IGNORE),
            f"{ops.quote_name(meta.db_table)} ({ops.quote_name(user_col)}, "
            f"{ops.quote_name(group_col)}) VALUES (%s, %s)",
            ops.on_conflict_suffix_sql([], OnConflict.IGNORE, None, None),
        )
        if part
    )
    with connection.cursor() as cursor:
        cursor.executemany(sql, rows)


def _through_user_column(user_model: Any) -> str:
    """Name of the user foreign key on the user-groups through model."""
    return str(user_model._meta.get_field("groups").m2m_field_name())


def _membership_diff(
    through: Any,
    user_column: str,
    planned: list[tuple[_Planned, Any]],
    group_rows: dict[str, tuple[Any, Any]],
    mirrored_ids: set[Any],
) -> tuple[list[tuple[Any, Any]], list[Any]]:
    """Rows to add ((user pk, group pk)) and membership row ids to delete."""
    users = {uid for plan, uid in planned if plan.groups is not None}
    # Placeholder ids (str) stand for groups a dry run would create: no rows yet.
    relevant_groups = {
        pk
        for pk in mirrored_ids | {pk for pk, _m in group_rows.values()}
        if not isinstance(pk, str)
    }
    current: dict[Any, dict[Any, Any]] = {}
    if users and relevant_groups:
        rows = through.objects.filter(group_id__in=sorted(relevant_groups)).values_list(
            "pk", f"{user_column}_id", "group_id"
        )
        for row_id, uid, gid in rows:
            if uid in users:
                current.setdefault(uid, {})[gid] = row_id
    add: list[tuple[Any, Any]] = []
    remove: list[Any] = []
    for plan, uid in planned:
        if plan.groups is None:
            continue
        wanted = {group_rows[name][0] for name in plan.groups}
        have = current.get(uid, {})
        add.extend((uid, gid) for gid in sorted(wanted - set(have), key=str))
        remove.extend(
            row_id for gid, row_id in have.items() if gid in mirrored_ids and gid not in wanted
        )
    return add, remove


def _membership_counts(
    user_model: type[AbstractBaseUser],
    planned: list[tuple[_Planned, Any]],
    new_users: list[tuple[_Planned, AbstractBaseUser]],
    group_rows: dict[str, tuple[Any, Any]],
    mirrored_ids: set[Any],
) -> tuple[int, int]:
    """(added, removed) a real run would produce, without writing."""
    through: Any = user_model.groups.through  # type: ignore[attr-defined]
    # Groups that do not exist yet get placeholder ids that match no row.
    rows = dict(group_rows)
    for index, name in enumerate(
        sorted(
            {n for p, _u in planned + [(p, None) for p, _u in new_users] for n in (p.groups or {})}
        )
    ):
        if name not in rows:
            rows[name] = (f"new:{index}", None)
    mirrored = mirrored_ids | {pk for pk, marker in rows.values() if marker is None}
    add, remove = _membership_diff(
        through,
        _through_user_column(user_model),
        planned + [(plan, f"new:{plan.identity.user_id}") for plan, _u in new_users],
        rows,
        mirrored,
    )
    return len(add), len(remove)

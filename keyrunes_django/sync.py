"""Bulk mirroring of Keyrunes users and groups (the ``keyrunes_sync_*`` commands).

The decisions are the login mapper's own (:func:`keyrunes_django.mapping.get_mapper`):
``check_identity``, ``user_fields`` + ``fit_fields``, ``flags``, ``group_plan``,
``link_decision`` and ``may_adopt`` decide what each user should look like, its
in-memory steps (``new_user``, ``new_record``, ``user_changes``,
``identity_record_changes``, ``reactivation_changes``) what changes. This
module only replaces the one-row-at-a-time writes of
:meth:`~keyrunes_django.mapping.UserMapper.mirror` by bulk statements
(:mod:`keyrunes_django.bulk`).

The listing is consumed as a stream, in chunks of :data:`CHUNK_SIZE` users, each
going through the same phases: plan (mapper checks and values), link (local
records, :meth:`~keyrunes_django.mapping.UserMapper.link_decision`), changes,
group plan, write. Memory and queries per chunk are bounded, so a sync is
linear in the number of users; only the set of remote ids seen is kept for the
whole run (the shrink guard and the deactivation of missing users need it).

Nothing is ever deleted for users: users gone remotely are deactivated
(``is_active=False``) and only when asked. Every write happens in one
transaction that is rolled back when a later check fails (shrink guard,
duplicate ids, a failing listing), so an aborted sync changes nothing.
Remote users that do not fit the local model are refused and reported, and
everyone else is synced.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import router, transaction
from django.utils import timezone

from keyrunes_django import bulk, signals
from keyrunes_django.exceptions import KeyrunesError, KeyrunesProtocolError, MirrorRefused
from keyrunes_django.identity import VerifiedIdentity
from keyrunes_django.mapping import LocalHolder, UserMapper, get_mapper, report_collision
from keyrunes_django.models import KeyrunesIdentity, MirroredGroup
from keyrunes_django.revocation import Subject, revoke_subjects
from keyrunes_django.schemas import AdminUser
from keyrunes_django.schemas import Group as RemoteGroup

__all__ = [
    "CHUNK_SIZE",
    "DEFAULT_GROUP_MAX_SHRINK",
    "DEFAULT_MAX_SHRINK",
    "GroupSyncReport",
    "SyncAborted",
    "UserSyncReport",
    "group_collisions",
    "sync_groups",
    "sync_users",
]


Progress = Callable[[str, int, int], None]

#: Default ``--max-shrink``: abort when the listing has this many percent fewer users.
DEFAULT_MAX_SHRINK = 10.0
#: Default ``--max-shrink`` of ``keyrunes_sync_groups --prune``: group listings are short,
#: so removing one group of three is routine, while losing most of them is refused.
DEFAULT_GROUP_MAX_SHRINK = 50.0
#: Remote users planned and written together; bounds the memory and the size of statements.
CHUNK_SIZE = 500


class SyncAborted(KeyrunesError):
    """The sync stopped and changed nothing (listing shrank too much, empty listing...)."""


@dataclass
class UserSyncReport:
    """Counts of one user sync, and one line per affected user.

    The lines go to ``on_item`` when it is set (so a long sync does not keep
    them), else into ``items``.
    """

    remote: int = 0
    created: int = 0
    linked: int = 0
    updated: int = 0
    unchanged: int = 0
    deactivated: int = 0
    displaced: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    groups_created: int = 0
    groups_marked: int = 0
    memberships_added: int = 0
    memberships_removed: int = 0
    collisions: set[str] = field(default_factory=set)
    dry_run: bool = False
    items: list[str] = field(default_factory=list)
    on_item: Callable[[str], None] | None = field(default=None, repr=False, compare=False)

    def note(self, line: str) -> None:
        """Record one line about one user."""
        if self.on_item is not None:
            self.on_item(line)
        else:
            self.items.append(line)

    def summary(self) -> str:
        refused = sum(self.refused.values())
        reasons = ", ".join(f"{k}: {v}" for k, v in sorted(self.refused.items()))
        prefix = "Dry run, would have: " if self.dry_run else ""
        collisions = (
            f" Not mirrored onto local-only groups: {', '.join(sorted(self.collisions))}."
            if self.collisions
            else ""
        )
        return (
            f"{prefix}{self.remote} remote users: {self.created} created, {self.linked} linked, "
            f"{self.updated} updated, {self.unchanged} unchanged, {self.deactivated} "
            f"deactivated, {self.displaced} displaced, {refused} refused"
            f"{f' ({reasons})' if reasons else ''}; groups: "
            f"{self.groups_created} created, {self.groups_marked} marked as mirrored; "
            f"memberships: {self.memberships_added} added, {self.memberships_removed} removed."
            f"{collisions}"
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
    collisions: set[str] = field(default_factory=set)
    dry_run: bool = False
    items: list[str] = field(default_factory=list)

    def summary(self) -> str:
        prefix = "Dry run, would have: " if self.dry_run else ""
        collisions = (
            f" Not mirrored onto local-only groups: {', '.join(sorted(self.collisions))}."
            if self.collisions
            else ""
        )
        return (
            f"{prefix}{self.remote} remote groups: {self.created} created, {self.marked} marked "
            f"as mirrored, {self.unchanged} unchanged, {self.skipped} not mirrored by the "
            f"settings, {self.pruned} pruned.{collisions}"
        )


def _shrink_guard(before: int, after: int, max_shrink: float | None, what: str) -> None:
    """Raise :class:`SyncAborted` when ``after`` is more than ``max_shrink`` % below ``before``."""
    if max_shrink is None or not before or after >= before * (1 - max_shrink / 100):
        return
    raise SyncAborted(
        f"{what}: {after} listed against {before} known, it shrank by "
        f"{100 * (before - after) / before:.1f}%, more than the {max_shrink:g}% allowed "
        "(--max-shrink). Nothing was changed."
    )


# ------------------------------------------------------------------ groups


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


def _group_plan(
    mapper: UserMapper, names: list[str], namespace: str, organization_id: int, report: Any
) -> dict[str, str]:
    """Local group name -> remote group name for a remote group listing."""
    plan: dict[str, str] = {}
    for name in names:
        local = mapper.group_plan(_probe_identity(name, namespace, organization_id)) or {}
        if not local:
            report.skipped += 1
            report.items.append(f"skip {name} (not mirrored by MIRROR_GROUPS/GROUP_MAP)")
        for local_name, remote_name in local.items():
            plan.setdefault(local_name, remote_name)
    return plan


def sync_groups(
    remote_groups: Iterable[RemoteGroup | str],
    *,
    namespace: str,
    organization_id: int,
    prune: bool = False,
    max_shrink: float | None = DEFAULT_GROUP_MAX_SHRINK,
    dry_run: bool = False,
    mapper: UserMapper | None = None,
) -> GroupSyncReport:
    """Mirror remote groups into Django groups through the mapper's group rules.

    Each remote group becomes the local group(s) ``GROUP_MAP`` /
    ``MIRROR_GROUPS`` give it at login, marked with a :class:`MirroredGroup`.
    An existing local group the mirror did not create is left alone and
    reported as a collision unless ``ADOPT_GROUPS`` names it. With ``prune``,
    groups marked as mirrored from this namespace whose remote group no longer
    exists are deleted, unless that is more than ``max_shrink`` percent of
    them (:class:`SyncAborted`); local-only groups are never touched.
    """
    mapper = mapper or get_mapper()
    alias = router.db_for_write(Group)
    names = sorted({g if isinstance(g, str) else g.name for g in remote_groups})
    report = GroupSyncReport(remote=len(names), dry_run=dry_run)
    if prune and not names:
        raise SyncAborted("The remote group listing is empty; refusing to prune every group.")
    plan = _group_plan(mapper, names, namespace, organization_id, report)
    existing = bulk.groups_by_name(alias, plan)
    to_create = sorted(name for name in plan if name not in existing)
    to_mark = _groups_to_mark(mapper, plan, existing, report)
    stale = _stale_groups(namespace, set(names)) if prune else []
    if stale:
        mirrored = MirroredGroup.objects.filter(namespace=namespace).count()
        _shrink_guard(mirrored, mirrored - len(stale), max_shrink, "Mirrored groups")
    report.created, report.marked, report.pruned = len(to_create), len(to_mark), len(stale)
    report.items += [f"create {name} (from {plan[name]})" for name in to_create]
    report.items += [f"mark {name} as mirrored (from {plan[name]})" for name in to_mark]
    report.items += [f"prune {group} (remote {remote} is gone)" for _pk, group, remote in stale]
    if dry_run:
        return report
    now = timezone.now()
    with transaction.atomic(using=alias):
        ids = bulk.create_groups(alias, to_create)
        ids.update({name: existing[name][0] for name in to_mark})
        bulk.mark_mirrored(
            alias,
            [(ids[name], plan[name]) for name in to_create + to_mark],
            namespace=namespace,
            organization_id=organization_id,
            now=now,
        )
        MirroredGroup.objects.filter(
            group_id__in=[pk for pk, marker in existing.values() if marker]
        ).update(last_synced_at=now)
        bulk.delete_pks(alias, Group, [pk for pk, _group, _remote in stale])
    return report


def _groups_to_mark(
    mapper: UserMapper,
    plan: dict[str, str],
    existing: dict[str, tuple[Any, Any]],
    report: GroupSyncReport,
) -> list[str]:
    """Existing unmarked groups that may be adopted; the others are reported as collisions."""
    to_mark = []
    for name, (_pk, marker) in sorted(existing.items()):
        if marker:
            report.unchanged += 1
        elif mapper.may_adopt(name):
            to_mark.append(name)
        else:
            report.collisions.add(name)
            report.items.append(f"collision: {name} is a local-only group; not mirrored")
            report_collision(name, plan[name])
    return to_mark


def group_collisions(
    remote_groups: Iterable[RemoteGroup | str],
    *,
    namespace: str,
    organization_id: int,
    mapper: UserMapper | None = None,
) -> dict[str, str]:
    """Local-only groups a remote group maps onto (local name -> remote name).

    These are left alone by login and sync unless ``ADOPT_GROUPS`` names them.
    """
    mapper = mapper or get_mapper()
    names = sorted({g if isinstance(g, str) else g.name for g in remote_groups})
    plan = _group_plan(mapper, names, namespace, organization_id, GroupSyncReport())
    existing = bulk.groups_by_name(router.db_for_read(Group), plan)
    return {
        name: plan[name]
        for name, (_pk, marker) in sorted(existing.items())
        if not marker and not mapper.may_adopt(name)
    }


def _stale_groups(namespace: str, remote_names: set[str]) -> list[tuple[Any, str, str]]:
    """(group pk, group name, remote name) of this namespace's mirrored groups gone remotely."""
    rows = MirroredGroup.objects.filter(namespace=namespace).values_list(
        "group_id", "group__name", "remote_name"
    )
    return [row for row in rows if row[2] not in remote_names]


# ------------------------------------------------------------------- users


@dataclass
class _Planned:
    """One remote user through the phases of its chunk."""

    identity: VerifiedIdentity
    fields: dict[str, Any]
    flags: dict[str, bool]
    groups: dict[str, str] | None
    action: str = "update"  # "create", "link" or "update"
    user: Any = None
    record: KeyrunesIdentity | None = None
    dirty: set[str] = field(default_factory=set)
    record_dirty: set[str] = field(default_factory=set)


@dataclass
class _ChunkWrites:
    """What one chunk writes, collected by the phases before the write phase."""

    planned: list[_Planned] = field(default_factory=list)
    displaced: list[Any] = field(default_factory=list)
    swapped: list[Any] = field(default_factory=list)  # renamed onto a name renamed away
    new_groups: list[str] = field(default_factory=list)
    adopted: list[str] = field(default_factory=list)
    group_ids: dict[str, Any] = field(default_factory=dict)
    remote_of: dict[str, str] = field(default_factory=dict)


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
    on_item: Callable[[str], None] | None = None,
) -> UserSyncReport:
    """Mirror a complete remote user listing, read as a stream, in bulk.

    One line per affected user goes to ``on_item`` as it is decided, or into
    the report's ``items`` without it.

    Raises :class:`SyncAborted` and changes nothing when the listing has more
    than ``max_shrink`` percent fewer distinct users than the active users
    mirrored from this namespace (``None`` disables the check), and
    :class:`~keyrunes_django.exceptions.KeyrunesProtocolError` when it lists a
    remote id twice.
    """
    run = _UserSync(mapper or get_mapper(), namespace, organization_id, dry_run, progress)
    run.report.on_item = on_item
    return run.run(remote_users, deactivate_missing=deactivate_missing, max_shrink=max_shrink)


class _UserSync:
    """The plan of one user sync: state kept across chunks, and the phases of a chunk."""

    def __init__(
        self,
        mapper: UserMapper,
        namespace: str,
        organization_id: int,
        dry_run: bool,
        progress: Progress | None,
    ) -> None:
        self.mapper = mapper
        self.user_model: Any = get_user_model()
        self.login_field: str = self.user_model.USERNAME_FIELD
        self.alias = router.db_for_write(self.user_model)
        self.namespace = namespace
        self.organization_id = organization_id
        self.progress = progress
        self.report = UserSyncReport(dry_run=dry_run)
        self.now = timezone.now()
        self.seen: set[int] = set()
        # Dry run only: what earlier chunks would have written (logins, groups).
        self.dry_logins: set[Any] = set()
        self.dry_groups: set[str] = set()
        self.dry_adopted: set[str] = set()

    def run(
        self,
        remote_users: Iterable[AdminUser | VerifiedIdentity],
        *,
        deactivate_missing: bool,
        max_shrink: float | None,
    ) -> UserSyncReport:
        total = len(remote_users) if isinstance(remote_users, (list, tuple)) else 0
        active = self._mirrored_active().count()
        with transaction.atomic(using=self.alias):
            for batch in bulk.chunked(remote_users, CHUNK_SIZE):
                self._chunk([self._identity(item) for item in batch])
                if self.progress is not None:
                    self.progress("mapping", len(self.seen), max(total, len(self.seen)))
            self.report.remote = len(self.seen)
            _shrink_guard(active, len(self.seen), max_shrink, "Remote users")
            if deactivate_missing:
                self._deactivate_missing()
        if self.progress is not None:
            self.progress("writing", 1, 1)
        return self.report

    def _identity(self, item: AdminUser | VerifiedIdentity) -> VerifiedIdentity:
        if isinstance(item, VerifiedIdentity):
            return item
        return item.to_identity(self.namespace, self.organization_id)

    def _mirrored_active(self) -> Any:
        return KeyrunesIdentity.objects.using(self.alias).filter(
            namespace=self.namespace, user__is_active=True
        )

    def _refuse(self, identity: VerifiedIdentity, reason: str, what: str = "") -> None:
        self.report.refused[reason] += 1
        self.report.note(f"refuse {what}{identity.username} ({reason})")

    def _chunk(self, identities: list[VerifiedIdentity]) -> None:
        writes = _ChunkWrites(planned=self._plan(identities))
        self._attach_records(writes)
        renamed = self._update_existing(writes)
        self._link_new(writes, renamed)
        self._prepare_new(writes)
        self._group_plan(writes)
        if self.report.dry_run:
            self._count_memberships(writes)
        else:
            self._write(writes)
        for plan in writes.planned:
            # A user and its record point at each other through Django's relation
            # caches; unlinked, the chunk is freed now rather than by a late
            # cyclic collection, which kept memory growing with the listing.
            for obj in (plan.user, plan.record):
                if obj is not None:
                    obj._state.fields_cache.clear()

    # -------------------------------------------------------------- phases

    def _plan(self, identities: list[VerifiedIdentity]) -> list[_Planned]:
        """Mapper checks and target values; refusals are reported and dropped."""
        planned: list[_Planned] = []
        for identity in identities:
            if identity.user_id in self.seen:
                raise KeyrunesProtocolError(
                    f"The user listing names remote user id {identity.user_id} twice; "
                    "nothing was changed."
                )
            self.seen.add(identity.user_id)
            try:
                self.mapper.check_identity(identity)
                fields = self.mapper.fit_fields(self.mapper.user_fields(identity))
            except MirrorRefused as exc:
                self._refuse(identity, exc.reason)
                continue
            flags = self.mapper.flags(identity)
            groups = self.mapper.group_plan(identity)
            planned.append(_Planned(identity, fields, flags, groups))
        return planned

    def _attach_records(self, writes: _ChunkWrites) -> None:
        """The local record and user of each planned remote user that has one (one query)."""
        ids = [p.identity.user_id for p in writes.planned]
        records = {
            record.remote_user_id: record
            for record in KeyrunesIdentity.objects.using(self.alias)
            .filter(namespace=self.namespace, remote_user_id__in=ids)
            .select_related("user")
        }
        for plan in writes.planned:
            plan.record = records.get(plan.identity.user_id)
            if plan.record is not None:
                plan.user = plan.record.user
            else:
                plan.action = "create"

    def _update_existing(self, writes: _ChunkWrites) -> dict[Any, Any]:
        """In-memory changes of linked users; {user pk: new login} of those renamed."""
        renames: dict[Any, tuple[_Planned, Any]] = {}
        for plan in writes.planned:
            if plan.record is None:
                continue
            old_login = plan.user.get_username()
            reactivated, plan.record_dirty = self.mapper.reactivation_changes(
                plan.record, plan.user
            )
            plan.dirty = reactivated | self.mapper.user_changes(
                plan.user, plan.identity, plan.fields, plan.flags
            )
            plan.record_dirty |= self.mapper.identity_record_changes(plan.record, plan.identity)
            if self.login_field in plan.dirty:
                renames[plan.user.pk] = (plan, old_login)
            if reactivated:
                self.report.note(f"reactivate {plan.user.get_username()}")
        refused = self._refuse_taken_renames(writes, renames)
        writes.planned = [p for p in writes.planned if id(p) not in refused]
        for plan in writes.planned:
            if plan.record is not None:
                self._count_update(plan)
        return {pk: plan.user.get_username() for pk, (plan, _old) in renames.items()}

    def _refuse_taken_renames(
        self, writes: _ChunkWrites, renames: dict[Any, tuple[_Planned, Any]]
    ) -> set[int]:
        """Refuse (and undo in memory) renames onto a login that stays taken.

        A login held by another user renamed in this chunk is free (two users
        may even swap names); a login two users want, or one held by a user
        that keeps it, is not.
        """
        holders = self._holders([plan.user.get_username() for plan, _old in renames.values()])
        refused: set[int] = set()
        settled = False
        while not settled:  # a refusal keeps a name taken, which may refuse another rename
            settled, claimed = True, set()
            for pk, (plan, old_login) in list(renames.items()):
                login = plan.user.get_username()
                holder = holders.get(login)
                held = holder is not None and holder.pk != pk and holder.pk not in renames
                if held or login in claimed or login in self.dry_logins:
                    setattr(plan.user, self.login_field, old_login)
                    self._refuse(plan.identity, "username_taken", "update of ")
                    refused.add(id(plan))
                    del renames[pk]
                    settled = False
                    break
                claimed.add(login)
        writes.swapped = [
            plan.user
            for plan, _old in renames.values()
            if (holder := holders.get(plan.user.get_username())) is not None
            and holder.pk != plan.user.pk
        ]
        if self.report.dry_run:
            self.dry_logins.update(plan.user.get_username() for plan, _old in renames.values())
        return refused

    def _count_update(self, plan: _Planned) -> None:
        if plan.dirty:
            self.report.updated += 1
            self.report.note(f"update {plan.user.get_username()} ({', '.join(sorted(plan.dirty))})")
        else:
            self.report.unchanged += 1

    def _link_new(self, writes: _ChunkWrites, renamed: dict[Any, Any]) -> None:
        """Link decisions for remote users without a local record."""
        unlinked = [p for p in writes.planned if p.record is None]
        holders = {
            login: holder
            for login, holder in self._holders(
                [p.fields.get(self.login_field) for p in unlinked]
            ).items()
            if holder.pk not in renamed  # renamed in this chunk: the name is free
        }
        claimed: set[Any] = set(renamed.values())
        targets: dict[Any, tuple[_Planned, str | None]] = {}
        dropped: set[int] = set()
        for plan in unlinked:
            action = self._link_one(plan, holders, claimed)
            holder = holders.get(plan.fields.get(self.login_field))
            if action is None:
                dropped.add(id(plan))
            elif action == "link" and holder is not None:
                plan.action = "link"
                targets[holder.pk] = (plan, None)
            elif action == "displace" and holder is not None:
                login = str(plan.fields[self.login_field])
                targets[holder.pk] = (plan, self.mapper.displaced_login(login, holder))
        writes.planned = [p for p in writes.planned if id(p) not in dropped]
        self._load_targets(writes, targets)

    def _link_one(
        self, plan: _Planned, holders: dict[Any, LocalHolder], claimed: set[Any]
    ) -> str | None:
        """The link decision for one remote user, or ``None`` when it is refused."""
        login = plan.fields.get(self.login_field)
        if login is None:
            self._refuse(plan.identity, "no_username")
            return None
        holder = holders.get(login)
        if login in claimed or (holder is None and login in self.dry_logins):
            self._refuse(plan.identity, "username_taken")
            return None
        try:
            decision = self.mapper.link_decision(plan.identity, holder)
        except MirrorRefused as exc:
            self._refuse(plan.identity, exc.reason)
            return None
        listed = holder is not None and holder.remote_user_id in self.seen
        if decision.action == "reuse" or (decision.action == "displace" and listed):
            # Both remote users are in this listing: a real clash, not a re-created user.
            self._refuse(plan.identity, "username_taken")
            return None
        claimed.add(login)
        if self.report.dry_run:
            self.dry_logins.add(login)
        return decision.action

    def _holders(self, logins: list[Any]) -> dict[Any, LocalHolder]:
        """Local users holding any of ``logins``, with the identity each is linked to."""
        found: dict[Any, LocalHolder] = {}
        wanted = [login for login in logins if login is not None]
        for batch in bulk.chunked(wanted, bulk.in_batch_size(self.alias)):
            rows = self.user_model._default_manager.using(self.alias).filter(
                **{f"{self.login_field}__in": batch}
            )
            for pk, login, namespace, remote_id in rows.values_list(
                "pk",
                self.login_field,
                "keyrunes_identity__namespace",
                "keyrunes_identity__remote_user_id",
            ):
                found[login] = LocalHolder(pk, namespace, remote_id)
        return found

    def _load_targets(
        self, writes: _ChunkWrites, targets: dict[Any, tuple[_Planned, str | None]]
    ) -> None:
        """Load the local users to link or displace (one query); apply the renames in memory."""
        if not targets:
            return
        users = self.user_model._default_manager.using(self.alias).in_bulk(list(targets))
        for pk, (plan, new_login) in targets.items():
            user = users[pk]
            if new_login is None:
                plan.user = user
                continue
            self.report.note(
                f"displace {user.get_username()} (now {new_login}; Keyrunes user "
                f"{plan.identity.user_id} has its name)"
            )
            setattr(user, self.login_field, new_login)
            writes.displaced.append(user)
            self.report.displaced += 1

    def _prepare_new(self, writes: _ChunkWrites) -> None:
        """New users built in memory, linked users brought up to date."""
        kept: list[_Planned] = []
        for plan in writes.planned:
            if plan.action == "create":
                try:
                    plan.user = self.mapper.new_user(plan.identity, plan.fields, plan.flags)
                except MirrorRefused as exc:
                    self._refuse(plan.identity, exc.reason)
                    continue
                self.report.created += 1
                self.report.note(f"create {plan.fields[self.login_field]}")
            elif plan.action == "link":
                plan.dirty = self.mapper.user_changes(
                    plan.user, plan.identity, plan.fields, plan.flags
                )
                self.report.linked += 1
                self.report.note(f"link {plan.user.get_username()} to {plan.identity.username}")
            kept.append(plan)
        writes.planned = kept

    def _group_plan(self, writes: _ChunkWrites) -> None:
        """Which local groups the chunk needs: existing, to create, to adopt, collisions."""
        for plan in writes.planned:
            for local, remote in (plan.groups or {}).items():
                writes.remote_of.setdefault(local, remote)
        rows = bulk.groups_by_name(self.alias, writes.remote_of)
        refused: set[str] = set()
        for name in sorted(writes.remote_of):
            pk, marker = rows.get(name, (None, None))
            if pk is None and name not in self.dry_groups:
                writes.new_groups.append(name)
            elif pk is not None and not marker and name not in self.dry_adopted:
                if self.mapper.may_adopt(name):
                    writes.adopted.append(name)
                else:
                    refused.add(name)
                    continue
            writes.group_ids[name] = pk if pk is not None else f"new:{name}"
        self._report_groups(writes, refused)
        for plan in writes.planned:
            if plan.groups is not None and refused:
                plan.groups = {k: v for k, v in plan.groups.items() if k not in refused}

    def _report_groups(self, writes: _ChunkWrites, collisions: set[str]) -> None:
        self.report.groups_created += len(writes.new_groups)
        self.report.groups_marked += len(writes.new_groups) + len(writes.adopted)
        for name in sorted(collisions - self.report.collisions):
            self.report.note(f"collision: {name} is a local-only group; not mirrored")
            report_collision(name, writes.remote_of[name])
        self.report.collisions |= collisions
        if self.report.dry_run:
            self.dry_groups.update(writes.new_groups)
            self.dry_adopted.update(writes.adopted)
            for name in writes.new_groups:
                writes.group_ids[name] = f"new:{name}"

    # --------------------------------------------------------------- writes

    def _write(self, writes: _ChunkWrites) -> None:
        alias, mapper, model = self.alias, self.mapper, self.user_model
        created = [p for p in writes.planned if p.action == "create"]
        changed = [p for p in writes.planned if p.action != "create" and p.dirty]
        # Renames first: they free the login names the new users take.
        bulk.update_rows(alias, model, writes.displaced, [self.login_field])
        self._park_swapped(writes.swapped)
        user_fields = set().union(*[p.dirty for p in changed])
        bulk.update_rows(alias, model, [p.user for p in changed], user_fields)
        self._insert_users([p.user for p in created])
        bulk.insert_rows(
            alias,
            KeyrunesIdentity,
            [
                mapper.new_record(p.user, p.identity, self.now)
                for p in writes.planned
                if p.action != "update"
            ],
        )
        records = [
            p.record for p in writes.planned if p.record is not None and (p.dirty or p.record_dirty)
        ]
        for record in records:
            record.last_synced_at = self.now
        record_fields = {"last_synced_at"}.union(*[p.record_dirty for p in writes.planned])
        bulk.update_rows(alias, KeyrunesIdentity, records, record_fields)
        self._write_groups(writes)
        self._write_memberships(writes)
        self._send_signals(created, changed)

    def _park_swapped(self, users: list[Any]) -> None:
        """Give users that take a name another renamed user gives up a unique name first.

        The final UPDATE then never meets the unique constraint halfway (a swap).
        """
        if not users:
            return
        final = [user.get_username() for user in users]
        for user in users:
            setattr(user, self.login_field, f"~keyrunes~{user.pk}")
        bulk.update_rows(self.alias, self.user_model, users, [self.login_field])
        for user, login in zip(users, final, strict=True):
            setattr(user, self.login_field, login)

    def _insert_users(self, users: list[Any]) -> None:
        """Insert new users, then read their primary keys back by login name (one query)."""
        if not users:
            return
        bulk.insert_rows(self.alias, self.user_model, users)
        logins = [user.get_username() for user in users]
        found = dict(
            self.user_model._default_manager.using(self.alias)
            .filter(**{f"{self.login_field}__in": logins})
            .values_list(self.login_field, "pk")
        )
        for user in users:
            user.pk = found[user.get_username()]
            user._state.adding = False
            user._state.db = self.alias

    def _write_groups(self, writes: _ChunkWrites) -> None:
        ids = bulk.create_groups(self.alias, writes.new_groups)
        writes.group_ids.update(ids)
        bulk.mark_mirrored(
            self.alias,
            [
                (writes.group_ids[name], writes.remote_of[name])
                for name in writes.new_groups + writes.adopted
            ],
            namespace=self.namespace,
            organization_id=self.organization_id,
            now=self.now,
        )

    def _membership_diff(self, writes: _ChunkWrites) -> tuple[list[tuple[Any, Any]], list[Any]]:
        """Membership rows to add ((user pk, group pk)) and membership row ids to delete."""
        through: Any = self.user_model.groups.through
        user_column = str(self.user_model._meta.get_field("groups").m2m_field_name())
        members = [p for p in writes.planned if p.groups is not None]
        saved = [p.user.pk for p in members if p.user.pk is not None]
        current: dict[Any, dict[Any, tuple[Any, Any]]] = {}
        adopted = {
            writes.group_ids[name]
            for name in {*writes.adopted, *self.dry_adopted}
            if name in writes.group_ids
        }
        for batch in bulk.chunked(saved, bulk.in_batch_size(self.alias)):
            rows = through.objects.using(self.alias).filter(**{f"{user_column}__in": batch})
            for row_id, uid, gid, marker in rows.values_list(
                "pk", f"{user_column}_id", "group_id", "group__keyrunes_mirror__pk"
            ):
                current.setdefault(uid, {})[gid] = (row_id, marker or gid in adopted)
        add: list[tuple[Any, Any]] = []
        remove: list[Any] = []
        for plan in members:
            uid = plan.user.pk if plan.user.pk is not None else f"new:{plan.identity.user_id}"
            wanted = {writes.group_ids[name] for name in plan.groups or {}}
            have = current.get(uid, {})
            add.extend((uid, gid) for gid in sorted(wanted - set(have), key=str))
            remove.extend(
                row for gid, (row, mirrored) in have.items() if mirrored and gid not in wanted
            )
        return add, remove

    def _count_memberships(self, writes: _ChunkWrites) -> None:
        add, remove = self._membership_diff(writes)
        self.report.memberships_added += len(add)
        self.report.memberships_removed += len(remove)

    def _write_memberships(self, writes: _ChunkWrites) -> None:
        through: Any = self.user_model.groups.through
        user_column = str(self.user_model._meta.get_field("groups").m2m_field_name())
        add, remove = self._membership_diff(writes)
        bulk.insert_memberships(self.alias, through, user_column, add)
        bulk.delete_pks(self.alias, through, remove)
        self.report.memberships_added += len(add)
        self.report.memberships_removed += len(remove)

    def _send_signals(self, created: list[_Planned], changed: list[_Planned]) -> None:
        """``user_mirrored`` for each written user, as its chunk is written."""
        if not signals.user_mirrored.has_listeners():
            return
        sender = type(self.mapper)
        for plan in created:
            signals.user_mirrored.send(
                sender=sender, user=plan.user, identity=plan.identity, created=True, changed=True
            )
        for plan in changed:
            signals.user_mirrored.send(
                sender=sender, user=plan.user, identity=plan.identity, created=False, changed=True
            )

    def _deactivate_missing(self) -> None:
        """Deactivate (never delete) active mirrored users whose remote id was not listed."""
        rows = self._mirrored_active().values_list(
            "pk", "remote_user_id", "user_id", f"user__{self.login_field}"
        )
        gone = [
            (pk, remote_id, user_id, login)
            for pk, remote_id, user_id, login in rows.iterator(chunk_size=2000)
            if remote_id not in self.seen
        ]
        self.report.deactivated = len(gone)
        for _pk, _remote, _uid, login in gone:
            self.report.note(f"deactivate {login}")
        if self.report.dry_run:
            return
        size = bulk.in_batch_size(self.alias)
        for batch in bulk.chunked(gone, size):
            self.user_model._default_manager.using(self.alias).filter(
                pk__in=[user_id for _pk, _remote, user_id, _login in batch]
            ).update(is_active=False)
            KeyrunesIdentity.objects.using(self.alias).filter(
                pk__in=[pk for pk, _remote, _uid, _login in batch]
            ).update(deactivated_at=self.now)
        # Their tokens end too, on every instance: deprovisioning must not wait
        # for the tokens' expiry, nor be undone by them.
        revoke_subjects(
            [Subject(self.namespace, remote_id) for _pk, remote_id, _uid, _login in gone],
            reason="deactivated_by_sync",
        )

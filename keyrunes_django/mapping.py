"""Mirroring Keyrunes users and groups onto Django users and groups.

One code path for every source (login, bearer token, sync): a
:class:`~keyrunes_django.identity.VerifiedIdentity` goes into
:meth:`UserMapper.mirror`, a local user comes out. The mapper is driven by the
``KEYRUNES`` settings ``USER_ATTR_MAP``, ``GROUP_MAP``, ``MIRROR_GROUPS``,
``MIRROR_GROUPS_EXCEPT``, ``FLAGS_BY_GROUP``, ``REQUIRE_GROUP``,
``DENY_GROUP``, ``ALWAYS_UPDATE_USER`` and ``LINK_EXISTING_USERS``; a project
replaces it with a subclass named in ``USER_MAPPER``.

The pure computations (:meth:`UserMapper.user_fields`,
:meth:`UserMapper.group_plan`, :meth:`UserMapper.flags`,
:meth:`UserMapper.fit_fields`, :meth:`UserMapper.link_decision`) are kept
apart from the writes so bulk sync makes the same decisions, as are the
in-memory steps (:meth:`UserMapper.new_user`, :meth:`UserMapper.new_record`,
:meth:`UserMapper.user_changes`, :meth:`UserMapper.identity_record_changes`)
that decide what to write. Writes happen only for what changed: mirroring an
unchanged user issues reads only.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, cast

from django.contrib.auth import get_user_model
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.hashers import UNUSABLE_PASSWORD_PREFIX
from django.contrib.auth.models import Group
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.db import IntegrityError, router, transaction
from django.utils import timezone

from keyrunes_django import signals, tenancy
from keyrunes_django.bulk import groups_by_name
from keyrunes_django.conf import keyrunes_settings
from keyrunes_django.exceptions import InvalidToken, MirrorRefused
from keyrunes_django.identity import VerifiedIdentity
from keyrunes_django.models import KeyrunesIdentity, MirroredGroup

__all__ = ["FLAG_FIELDS", "LinkDecision", "LocalHolder", "MirrorResult", "UserMapper", "get_mapper"]

logger = logging.getLogger(__name__)

#: The user flags ``FLAGS_BY_GROUP`` may drive.
FLAG_FIELDS = ("is_active", "is_staff", "is_superuser")

#: Identity attributes ``USER_ATTR_MAP`` can name; other names are read from the payload.
IDENTITY_ATTRIBUTES = frozenset(
    {"user_id", "username", "email", "namespace", "organization_id", "external_id"}
)

# Claims that change with every token; storing them would turn each request into a write.
_VOLATILE_PAYLOAD_KEYS = frozenset({"exp", "iat"})

_MISSING = object()


def unusable_password() -> str:
    """What ``set_unusable_password`` stores, from one urandom call instead of 40.

    Django draws its 40 random characters one by one from ``SystemRandom``;
    for thousands of new users in a bulk sync that dominated the run.
    """
    return UNUSABLE_PASSWORD_PREFIX + secrets.token_urlsafe(30)


@dataclass(frozen=True)
class MirrorResult:
    """What :meth:`UserMapper.mirror` did: ``changed`` is True when anything was written."""

    user: AbstractBaseUser
    created: bool
    changed: bool


@dataclass(frozen=True)
class LocalHolder:
    """The local user that holds a login name, and the Keyrunes user it is linked to, if any."""

    pk: Any
    namespace: str | None = None
    remote_user_id: int | None = None


@dataclass(frozen=True)
class LinkDecision:
    """What to do for a remote user that has no local record yet.

    ``create``: a new local user. ``link``: take over the unlinked local user
    ``holder`` (``LINK_EXISTING_USERS``). ``displace``: ``holder`` is linked to
    an older remote user of the same namespace that no longer has this name;
    rename it (:meth:`UserMapper.displaced_login`) and create a new user.
    ``reuse``: ``holder`` is already this remote user's local user.
    """

    action: Literal["create", "link", "displace", "reuse"]
    holder: LocalHolder | None = None


def names(value: object) -> frozenset[str]:
    """A setting that takes a group name or a list of names, as a set (``None`` -> empty)."""
    if value is None or value is False:
        return frozenset()
    if isinstance(value, str):
        return frozenset({value})
    if isinstance(value, Iterable):
        return frozenset(str(item) for item in value)
    raise ImproperlyConfigured(f"Expected a group name or a list of names, got {value!r}.")


class UserMapper:
    """Turns a verified Keyrunes identity into a local user, groups and flags.

    Override any method in a subclass and name it in ``KEYRUNES["USER_MAPPER"]``.
    """

    def __init__(self) -> None:
        self.user_model: type[AbstractBaseUser] = get_user_model()

    # ------------------------------------------------------------ policy checks

    def check_identity(self, identity: VerifiedIdentity) -> None:
        """Raise :class:`MirrorRefused` if this identity may not have a local user."""
        try:
            tenancy.check_identity(identity.namespace, identity.organization_id)
        except InvalidToken as exc:
            if exc.reason == "wrong_namespace":
                raise MirrorRefused(
                    f"Identity belongs to namespace {identity.namespace!r}; this service "
                    f"accepts only {tenancy.namespace()!r}.",
                    reason="wrong_namespace",
                ) from None
            raise MirrorRefused(
                f"Identity belongs to organization {identity.organization_id}; this service "
                f"accepts only {tenancy.organization_scope()}.",
                reason="wrong_organization",
            ) from None
        required = names(keyrunes_settings.REQUIRE_GROUP)
        denied = names(keyrunes_settings.DENY_GROUP)
        if (required or denied) and identity.groups is None:
            raise MirrorRefused(
                "The identity carries no groups, so REQUIRE_GROUP/DENY_GROUP cannot be checked.",
                reason="groups_unknown",
            )
        if required and not identity.has_any_group(required):
            raise MirrorRefused(
                f"User is in none of the required groups {sorted(required)}.",
                reason="missing_required_group",
            )
        if denied and identity.has_any_group(denied):
            raise MirrorRefused(
                f"User is in a denied group ({sorted(denied & identity.group_set)}).",
                reason="denied_group",
            )

    # ------------------------------------------------------- pure computations

    def _model_field_names(self) -> set[str]:
        return {field.name for field in self.user_model._meta.concrete_fields}

    def remote_value(self, identity: VerifiedIdentity, remote: str) -> Any:
        """The value of one remote field: an identity attribute, else a payload key."""
        if remote in IDENTITY_ATTRIBUTES:
            value = getattr(identity, remote)
        else:
            value = identity.payload.get(remote, _MISSING)
        return _MISSING if value is None else value

    def user_fields(self, identity: VerifiedIdentity) -> dict[str, Any]:
        """Local field values from ``USER_ATTR_MAP`` (local field <- remote field).

        Remote fields the identity lacks are left out. With the default map,
        local fields the user model lacks (``username`` on an email-keyed
        model) are skipped; a configured map naming a missing field is an error.
        """
        attr_map: Mapping[str, str] = keyrunes_settings.USER_ATTR_MAP or {}
        explicit = "USER_ATTR_MAP" in keyrunes_settings.user_settings
        model_fields = self._model_field_names()
        fields: dict[str, Any] = {}
        for local, remote in attr_map.items():
            if local not in model_fields:
                if explicit:
                    raise ImproperlyConfigured(
                        f"KEYRUNES['USER_ATTR_MAP'] names {local!r}, which "
                        f"{self.user_model.__name__} does not have."
                    )
                continue
            value = self.remote_value(identity, remote)
            if value is not _MISSING:
                fields[local] = value
        return fields

    def fit_fields(self, fields: Mapping[str, Any]) -> dict[str, Any]:
        """``fields`` as the user model stores them; :class:`MirrorRefused` when one does not fit.

        Each value goes through its model field's ``to_python``, so a remote
        number mapped onto a text field is compared as the text that would be
        written. Remote data the database would reject is refused here rather
        than failing in SQL: an empty ``USERNAME_FIELD`` (``no_username``), a
        text longer than the column (``value_too_long``), a value of the wrong
        kind (``invalid_value``).
        """
        meta = self.user_model._meta
        username_field: str = getattr(self.user_model, "USERNAME_FIELD")  # noqa: B009
        fitted: dict[str, Any] = {}
        for name, raw in fields.items():
            field: Any = meta.get_field(name)
            try:
                value = field.to_python(raw)
            except ValidationError:
                raise MirrorRefused(
                    f"The Keyrunes value for {name!r} is not a valid {field.get_internal_type()}.",
                    reason="invalid_value",
                ) from None
            max_length = getattr(field, "max_length", None)
            if isinstance(value, str) and max_length and len(value) > max_length:
                raise MirrorRefused(
                    f"The Keyrunes value for {name!r} has {len(value)} characters; the local "
                    f"field holds {max_length}.",
                    reason="value_too_long",
                )
            if name == username_field and value in (None, ""):
                raise MirrorRefused(
                    f"The Keyrunes user has an empty {name!r}, which the local user needs.",
                    reason="no_username",
                )
            fitted[name] = value
        return fitted

    def group_plan(self, identity: VerifiedIdentity) -> dict[str, str] | None:
        """Local group name -> the remote group it comes from; ``None``: leave groups alone.

        This is the hook for group mapping: login, token and sync all call it.

        A remote group is mirrored when ``MIRROR_GROUPS`` is True, when it is in
        the ``MIRROR_GROUPS`` allow-list, or when ``GROUP_MAP`` names it, unless
        ``MIRROR_GROUPS_EXCEPT`` lists it. ``MIRROR_GROUPS = False`` turns
        group mirroring off entirely.
        """
        setting = keyrunes_settings.MIRROR_GROUPS
        if identity.groups is None or setting is False:
            return None
        mirror_all = setting is True
        allowed = frozenset() if isinstance(setting, bool) else names(setting)
        excluded = names(keyrunes_settings.MIRROR_GROUPS_EXCEPT)
        group_map: Mapping[str, Any] = keyrunes_settings.GROUP_MAP or {}
        plan: dict[str, str] = {}
        for remote in identity.groups:
            if remote in excluded:
                continue
            if remote in group_map:
                local_names: Iterable[str] = sorted(names(group_map[remote]))
            elif mirror_all or remote in allowed:
                local_names = (remote,)
            else:
                continue
            for local in local_names:
                plan.setdefault(local, remote)
        return plan

    def flags(self, identity: VerifiedIdentity) -> dict[str, bool]:
        """``is_staff``/``is_superuser``/``is_active`` values to apply.

        Defaults: a global superadmin (``superadmin`` in
        namespace ``public``) gets ``is_superuser`` and ``is_staff``, a tenant
        admin ``is_staff``; ``is_active`` is not managed. ``FLAGS_BY_GROUP``
        replaces a flag's rule with "member of any of these remote groups"
        (``None`` stops managing that flag). Flags the user model lacks are
        skipped; without groups nothing is returned.
        """
        if identity.groups is None:
            return {}
        rules: dict[str, bool | None] = {
            "is_superuser": identity.is_global_superadmin,
            "is_staff": identity.is_admin,
        }
        configured: Mapping[str, Any] = keyrunes_settings.FLAGS_BY_GROUP or {}
        for flag, groups in configured.items():
            if flag not in FLAG_FIELDS:
                raise ImproperlyConfigured(
                    f"KEYRUNES['FLAGS_BY_GROUP'] key {flag!r} is not one of {FLAG_FIELDS}."
                )
            rules[flag] = None if groups is None else identity.has_any_group(names(groups))
        model_fields = self._model_field_names()
        return {
            flag: value
            for flag, value in rules.items()
            if value is not None and flag in model_fields
        }

    def may_adopt(self, local_name: str) -> bool:
        """Whether an existing local-only group ``local_name`` may become mirrored.

        Only names listed in ``ADOPT_GROUPS``: a same-named remote group must
        not take over a group (and its permissions) that the app did not create.
        """
        return local_name in names(keyrunes_settings.ADOPT_GROUPS)

    def link_decision(self, identity: VerifiedIdentity, holder: LocalHolder | None) -> LinkDecision:
        """How ``identity``, which has no local record, gets a local user.

        ``holder`` is the local user that already has the login name (or
        ``None``). Keyrunes keeps usernames and emails unique inside a
        namespace, so a holder linked to another remote user of the same
        namespace belongs to a remote user that was deleted or renamed: it is
        displaced (renamed, history kept) instead of blocking the new user.
        Raises :class:`MirrorRefused` (``local_user_exists``, ``username_taken``).
        """
        if holder is None:
            return LinkDecision("create")
        if holder.namespace is None:
            if not keyrunes_settings.LINK_EXISTING_USERS:
                raise MirrorRefused(
                    "A local user with this name exists that is not linked to Keyrunes; "
                    "refusing to take it over. Link it by setting "
                    "KEYRUNES['LINK_EXISTING_USERS'] = True or rename the local user.",
                    reason="local_user_exists",
                )
            return LinkDecision("link", holder)
        if (holder.namespace, holder.remote_user_id) == (identity.namespace, identity.user_id):
            return LinkDecision("reuse", holder)
        if holder.namespace == identity.namespace:
            return LinkDecision("displace", holder)
        raise MirrorRefused(
            f"The local user with this name belongs to another Keyrunes identity "
            f"({holder.namespace}:{holder.remote_user_id}).",
            reason="username_taken",
        )

    def displaced_login(self, login: str, holder: LocalHolder) -> str:
        """The new login name of a displaced local user: ``<login>~<old remote id>``."""
        suffix = f"~{holder.remote_user_id}"
        field = self.user_model._meta.get_field(getattr(self.user_model, "USERNAME_FIELD"))  # noqa: B009
        max_length = getattr(field, "max_length", None) or 150
        return login[: max_length - len(suffix)] + suffix

    def stored_payload(
        self, identity: VerifiedIdentity, previous: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """The remote data kept on :class:`KeyrunesIdentity`.

        The new payload is merged over the ``previous`` one, without the
        per-token ``exp``/``iat``: a login answer, a token's claims and an
        ``/api/me`` answer carry different keys, and alternating between them
        must not turn every request into a write.
        """
        merged = dict(previous or {})
        merged.update(
            (key, value)
            for key, value in identity.payload.items()
            if key not in _VOLATILE_PAYLOAD_KEYS
        )
        return merged

    # ------------------------------------------- in-memory changes (no writes)

    def new_user(
        self, identity: VerifiedIdentity, fields: dict[str, Any], flags: dict[str, bool]
    ) -> AbstractBaseUser:
        """An unsaved local user for ``identity``, without a usable password.

        Sends :data:`~keyrunes_django.signals.populate_user` (``created=True``);
        raises :class:`MirrorRefused` (``missing_field``) when a required field
        of the user model still has no value.
        """
        user = self.user_model(**fields)
        for flag, value in flags.items():
            setattr(user, flag, value)
        user.password = unusable_password()
        signals.populate_user.send(sender=type(self), user=user, identity=identity, created=True)
        missing = [
            field.name
            for field in user._meta.concrete_fields
            if getattr(user, field.attname) is None
            and not (field.primary_key or field.null)
            and not (getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False))
        ]
        if missing:
            raise MirrorRefused(
                f"{self.user_model.__name__} requires {', '.join(missing)}, which neither "
                "USER_ATTR_MAP nor a populate_user receiver provides.",
                reason="missing_field",
            )
        return user

    def new_record(
        self, user: AbstractBaseUser, identity: VerifiedIdentity, now: datetime
    ) -> KeyrunesIdentity:
        """An unsaved :class:`KeyrunesIdentity` linking ``user`` to ``identity``."""
        return KeyrunesIdentity(
            user=cast(Any, user),
            namespace=identity.namespace,
            remote_user_id=identity.user_id,
            organization_id=identity.organization_id,
            external_id=identity.external_id or "",
            payload=self.stored_payload(identity),
            last_synced_at=now,
        )

    def user_changes(
        self,
        user: AbstractBaseUser,
        identity: VerifiedIdentity,
        fields: dict[str, Any],
        flags: dict[str, bool],
    ) -> set[str]:
        """Apply ``fields`` (with ``ALWAYS_UPDATE_USER``) and ``flags`` to ``user`` in memory.

        Also makes a usable local password unusable and sends
        :data:`~keyrunes_django.signals.populate_user` (``created=False``);
        returns the names of the fields that changed, for the caller to save.
        """
        dirty: set[str] = set()
        values = dict(fields) if keyrunes_settings.ALWAYS_UPDATE_USER else {}
        values.update(flags)
        for name, value in values.items():
            if getattr(user, name) != value:
                setattr(user, name, value)
                dirty.add(name)
        if user.has_usable_password():
            # Logins go through Keyrunes: a local password would be a second way in.
            user.set_unusable_password()
            dirty.add("password")
        if signals.populate_user.has_listeners():
            concrete = [f for f in user._meta.concrete_fields if not f.primary_key]
            before = {f.attname: getattr(user, f.attname) for f in concrete}
            signals.populate_user.send(
                sender=type(self), user=user, identity=identity, created=False
            )
            dirty.update(f.name for f in concrete if getattr(user, f.attname) != before[f.attname])
        return dirty

    def identity_record_changes(
        self, record: KeyrunesIdentity, identity: VerifiedIdentity
    ) -> set[str]:
        """Apply ``identity`` to its ``record`` in memory; the names of the fields that changed.

        ``last_synced_at`` is left to the caller, which saves.
        """
        dirty: set[str] = set()
        payload = self.stored_payload(identity, record.payload)
        if record.organization_id != identity.organization_id:
            record.organization_id = identity.organization_id
            dirty.add("organization_id")
        if identity.external_id and record.external_id != identity.external_id:
            record.external_id = identity.external_id
            dirty.add("external_id")
        if record.payload != payload:
            record.payload = payload
            dirty.add("payload")
        return dirty

    #: Sources of an identity that show Keyrunes itself knows the user now: a
    #: login, an ``/api/me`` answer, the admin listing. A token's claims alone
    #: do not: Keyrunes re-signs tokens of deleted users.
    CONFIRMING_SOURCES: frozenset[str] = frozenset({"login", "remote", "sync"})

    def reactivation_changes(
        self,
        record: KeyrunesIdentity,
        user: AbstractBaseUser,
        identity: VerifiedIdentity | None = None,
    ) -> tuple[set[str], set[str]]:
        """Reactivate, in memory, a user that a sync deactivated and Keyrunes knows again.

        Only an identity Keyrunes confirmed (see :attr:`CONFIRMING_SOURCES`)
        reactivates; ``None`` means the caller holds such a confirmation (the
        admin listing). Returns the changed user fields and record fields, for
        the caller to save.
        """
        if record.deactivated_at is None:
            return set(), set()
        if identity is not None and identity.source not in self.CONFIRMING_SOURCES:
            return set(), set()
        record.deactivated_at = None
        if user.is_active:
            return set(), {"deactivated_at"}
        user.is_active = True
        return {"is_active"}, {"deactivated_at"}

    # ------------------------------------------------------------------ writes

    def mirror(self, identity: VerifiedIdentity) -> MirrorResult:
        """Create or update the local user of ``identity``; write only what changed."""
        self.check_identity(identity)
        fields = self.fit_fields(self.user_fields(identity))
        flags = self.flags(identity)
        plan = self.group_plan(identity)

        record = self._find_record(identity)
        created = False
        changed = False
        if record is None:
            record, created, changed = self._create_or_link(identity, fields, flags)
        user = record.user
        if not created:
            if record.deactivated_at is not None and identity.source not in self.CONFIRMING_SOURCES:
                flags = {name: value for name, value in flags.items() if name != "is_active"}
            user_dirty, record_dirty = self.reactivation_changes(record, user, identity)
            changed = self._update_user(user, identity, fields, flags, user_dirty) or changed
        changed = self._sync_groups(user, identity, plan) or changed
        if not created:
            changed = self._update_record(record, identity, changed, record_dirty) or changed

        signals.user_mirrored.send(
            sender=type(self), user=user, identity=identity, created=created, changed=changed
        )
        return MirrorResult(user=user, created=created, changed=changed)

    def _find_record(self, identity: VerifiedIdentity) -> KeyrunesIdentity | None:
        return (
            KeyrunesIdentity.objects.select_related("user")
            .filter(namespace=identity.namespace, remote_user_id=identity.user_id)
            .first()
        )

    def _new_record(self, user: AbstractBaseUser, identity: VerifiedIdentity) -> KeyrunesIdentity:
        record = self.new_record(user, identity, timezone.now())
        record.save(force_insert=True)
        return record

    def _create_or_link(
        self, identity: VerifiedIdentity, fields: dict[str, Any], flags: dict[str, bool]
    ) -> tuple[KeyrunesIdentity, bool, bool]:
        """(record, created, changed) for an identity without a local record yet."""
        username_field: str = getattr(self.user_model, "USERNAME_FIELD")  # noqa: B009
        username = fields.get(username_field)
        if username is None:
            raise ImproperlyConfigured(
                f"KEYRUNES['USER_ATTR_MAP'] gives no value for {username_field!r}, "
                f"the USERNAME_FIELD of {self.user_model.__name__}."
            )
        manager: Any = self.user_model._default_manager
        row = (
            manager.filter(**{username_field: username})
            .values_list("pk", "keyrunes_identity__namespace", "keyrunes_identity__remote_user_id")
            .first()
        )
        holder = LocalHolder(*row) if row is not None else None
        decision = self.link_decision(identity, holder)
        if decision.action == "reuse" and holder is not None:
            # Linked a moment ago by a concurrent login of the same remote user.
            record = KeyrunesIdentity.objects.select_related("user").get(user_id=holder.pk)
            return record, False, False
        if decision.action == "link" and holder is not None:
            return self._link_existing(manager.get(pk=holder.pk), identity)
        try:
            with transaction.atomic():
                if decision.action == "displace" and holder is not None:
                    new_login = self.displaced_login(str(username), holder)
                    manager.filter(pk=holder.pk).update(**{username_field: new_login})
                    logger.warning(
                        "Local user pk=%s (Keyrunes user %s:%s) renamed to %r: Keyrunes user "
                        "%s now has its name",
                        holder.pk, holder.namespace, holder.remote_user_id, new_login,
                        identity.user_id,
                    )  # fmt: skip
                user = self.new_user(identity, fields, flags)
                user.save()
                record = self._new_record(user, identity)
        except IntegrityError:
            # A concurrent first login of the same remote user won the race.
            found = self._find_record(identity)
            if found is None:
                raise MirrorRefused(
                    f"A local user named {username!r} already exists for another "
                    "Keyrunes identity.",
                    reason="username_taken",
                ) from None
            return found, False, False
        return record, True, True

    def _link_existing(
        self, existing: AbstractBaseUser, identity: VerifiedIdentity
    ) -> tuple[KeyrunesIdentity, bool, bool]:
        try:
            with transaction.atomic():
                record = self._new_record(existing, identity)
        except IntegrityError:
            found = self._find_record(identity)
            if found is None:  # pragma: no cover - the user was linked to someone else meanwhile
                raise MirrorRefused(
                    f"The local user {existing.get_username()!r} was linked concurrently.",
                    reason="username_taken",
                ) from None
            return found, False, False
        logger.info(
            "Linked existing local user pk=%s to Keyrunes user %s:%s",
            existing.pk,
            identity.namespace,
            identity.user_id,
        )
        return record, False, True

    def _update_user(
        self,
        user: AbstractBaseUser,
        identity: VerifiedIdentity,
        fields: dict[str, Any],
        flags: dict[str, bool],
        already_dirty: set[str] | None = None,
    ) -> bool:
        dirty = self.user_changes(user, identity, fields, flags) | (already_dirty or set())
        if not dirty:
            return False
        try:
            with transaction.atomic():
                user.save(update_fields=sorted(dirty))
        except IntegrityError:
            raise MirrorRefused(
                f"Updating local user pk={user.pk} from Keyrunes clashes with another local "
                "user (duplicate username?).",
                reason="username_taken",
            ) from None
        return True

    def _update_record(
        self,
        record: KeyrunesIdentity,
        identity: VerifiedIdentity,
        changed: bool,
        already_dirty: set[str] | None = None,
    ) -> bool:
        dirty = self.identity_record_changes(record, identity) | (already_dirty or set())
        if not dirty and not changed:
            return False
        record.last_synced_at = timezone.now()
        dirty.add("last_synced_at")
        record.save(update_fields=sorted(dirty))
        return bool(dirty - {"last_synced_at"})

    def _sync_groups(
        self, user: AbstractBaseUser, identity: VerifiedIdentity, plan: dict[str, str] | None
    ) -> bool:
        if plan is None:
            return False
        groups_manager: Any = user.groups  # type: ignore[attr-defined]
        current = {
            name: (pk, marker)
            for pk, name, marker in groups_manager.values_list("pk", "name", "keyrunes_mirror__pk")
        }
        remove = [pk for name, (pk, marker) in current.items() if marker and name not in plan]
        adopt: dict[int, str] = {}
        add: list[int] = []
        missing = set(plan) - set(current)
        found = groups_by_name(router.db_for_read(Group), missing) if missing else {}
        for name in sorted(set(plan) - {n for n, (_pk, marker) in current.items() if marker}):
            pk, marker = current.get(name) or found.get(name) or (None, None)
            if pk is None:
                group, created = Group.objects.get_or_create(name=name)
                if not created:  # pragma: no cover - someone created it a moment ago
                    continue
                pk = group.pk
            elif not marker and not self.may_adopt(name):
                report_collision(name, plan[name])
                continue
            if not marker:
                adopt[pk] = name
            if name not in current:
                add.append(pk)
        now = timezone.now()
        for pk, name in adopt.items():
            MirroredGroup.objects.get_or_create(
                group_id=pk,
                defaults={
                    "remote_name": plan[name],
                    "namespace": identity.namespace,
                    "organization_id": identity.organization_id,
                    "last_synced_at": now,
                },
            )
        if add:
            groups_manager.add(*add)
        if remove:
            groups_manager.remove(*remove)
        return bool(add or remove or adopt)


def report_collision(local_name: str, remote_name: str) -> None:
    """Log that remote group ``remote_name`` was not mirrored onto local-only ``local_name``."""
    logger.warning(
        "Keyrunes group %r was not mirrored: the local group %r was not created by the mirror "
        "(list it in KEYRUNES['ADOPT_GROUPS'] to adopt it, or rename it).",
        remote_name,
        local_name,
    )


def get_mapper() -> UserMapper:
    """An instance of the class named by ``KEYRUNES["USER_MAPPER"]``."""
    mapper_class = keyrunes_settings.USER_MAPPER
    if not (isinstance(mapper_class, type) and issubclass(mapper_class, UserMapper)):
        raise ImproperlyConfigured(
            "KEYRUNES['USER_MAPPER'] must name a subclass of keyrunes_django.mapping.UserMapper."
        )
    return mapper_class()

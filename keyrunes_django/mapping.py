"""Mirroring Keyrunes users and groups onto Django users and groups.

One code path for every source (login, bearer token, sync): a
:class:`~keyrunes_django.identity.VerifiedIdentity` goes into
:meth:`UserMapper.mirror`, a local user comes out. The mapper is driven by the
``KEYRUNES`` settings ``USER_ATTR_MAP``, ``GROUP_MAP``, ``MIRROR_GROUPS``,
``MIRROR_GROUPS_EXCEPT``, ``FLAGS_BY_GROUP``, ``REQUIRE_GROUP``,
``DENY_GROUP``, ``ALWAYS_UPDATE_USER`` and ``LINK_EXISTING_USERS``; a project
replaces it with a subclass named in ``USER_MAPPER``.

The pure computations (:meth:`UserMapper.user_fields`,
:meth:`UserMapper.local_group_names`, :meth:`UserMapper.flags`) are kept apart
from the writes so bulk sync can reuse them, as are the in-memory steps
(:meth:`UserMapper.new_user`, :meth:`UserMapper.new_record`,
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
from typing import Any, cast

from django.contrib.auth import get_user_model
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.hashers import UNUSABLE_PASSWORD_PREFIX
from django.contrib.auth.models import Group
from django.core.exceptions import ImproperlyConfigured
from django.db import IntegrityError, transaction
from django.utils import timezone

from keyrunes_django import signals
from keyrunes_django.conf import keyrunes_settings
from keyrunes_django.exceptions import MirrorRefused
from keyrunes_django.identity import VerifiedIdentity
from keyrunes_django.models import KeyrunesIdentity, MirroredGroup

__all__ = ["FLAG_FIELDS", "MirrorResult", "UserMapper", "get_mapper"]

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
        namespace = str(keyrunes_settings.NAMESPACE)
        if identity.namespace != namespace:
            raise MirrorRefused(
                f"Identity belongs to namespace {identity.namespace!r}; this service "
                f"accepts only {namespace!r}.",
                reason="wrong_namespace",
            )
        scope = keyrunes_settings.ORGANIZATION_SCOPE
        if scope not in (None, "") and identity.organization_id != int(scope):
            raise MirrorRefused(
                f"Identity belongs to organization {identity.organization_id}; this service "
                f"accepts only {int(scope)}.",
                reason="wrong_organization",
            )
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

    def group_plan(self, identity: VerifiedIdentity) -> dict[str, str] | None:
        """Local group name -> the remote group it comes from; ``None``: leave groups alone.

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

    def local_group_names(self, identity: VerifiedIdentity) -> set[str] | None:
        """Names of the mirrored local groups the user should be in (``None``: unknown)."""
        plan = self.group_plan(identity)
        return None if plan is None else set(plan)

    def flags(self, identity: VerifiedIdentity) -> dict[str, bool]:
        """``is_staff``/``is_superuser``/``is_active`` values to apply.

        Defaults (contract §12.2): a global superadmin (``superadmin`` in
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

        Sends :data:`~keyrunes_django.signals.populate_user` (``created=True``).
        """
        user = self.user_model(**fields)
        for flag, value in flags.items():
            setattr(user, flag, value)
        user.password = unusable_password()
        signals.populate_user.send(sender=type(self), user=user, identity=identity, created=True)
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

    def reactivation_changes(
        self, record: KeyrunesIdentity, user: AbstractBaseUser
    ) -> tuple[set[str], set[str]]:
        """Reactivate, in memory, a user that a sync deactivated and Keyrunes knows again.

        Returns the changed user fields and record fields, for the caller to save.
        """
        if record.deactivated_at is None:
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
        fields = self.user_fields(identity)
        flags = self.flags(identity)
        plan = self.group_plan(identity)

        record = self._find_record(identity)
        created = False
        changed = False
        if record is None:
            record, created, changed = self._create_or_link(identity, fields, flags)
        user = record.user
        if not created:
            user_dirty, record_dirty = self.reactivation_changes(record, user)
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
        if not username:
            raise ImproperlyConfigured(
                f"KEYRUNES['USER_ATTR_MAP'] gives no value for {username_field!r}, "
                f"the USERNAME_FIELD of {self.user_model.__name__}."
            )
        manager = self.user_model._default_manager
        existing = manager.filter(**{username_field: username}).first()
        if existing is not None:
            return self._claim_existing(existing, identity)

        try:
            with transaction.atomic():
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

    def _claim_existing(
        self, existing: AbstractBaseUser, identity: VerifiedIdentity
    ) -> tuple[KeyrunesIdentity, bool, bool]:
        other = KeyrunesIdentity.objects.filter(user=cast(Any, existing)).first()
        if other is not None:
            if (other.namespace, other.remote_user_id) == (identity.namespace, identity.user_id):
                other.user = cast(Any, existing)
                return other, False, False
            raise MirrorRefused(
                f"The local user {existing.get_username()!r} belongs to another Keyrunes "
                f"identity ({other}).",
                reason="username_taken",
            )
        if not keyrunes_settings.LINK_EXISTING_USERS:
            raise MirrorRefused(
                f"A local user {existing.get_username()!r} exists that is not linked to "
                "Keyrunes; refusing to take it over. Link it by setting "
                "KEYRUNES['LINK_EXISTING_USERS'] = True or rename the local user.",
                reason="local_user_exists",
            )
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
        adopt = {pk: name for name, (pk, marker) in current.items() if not marker and name in plan}
        missing = set(plan) - set(current)
        add: list[int] = []
        if missing:
            found = groups_by_name(missing)
            for name in sorted(missing):
                if name in found:
                    pk, marker = found[name]
                else:
                    pk, marker = Group.objects.get_or_create(name=name)[0].pk, None
                if not marker:
                    adopt[pk] = name
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


def groups_by_name(names: Iterable[str]) -> dict[str, tuple[int, int | None]]:
    """Existing local groups among ``names``: name -> (pk, :class:`MirroredGroup` pk or None)."""
    return {
        name: (pk, marker)
        for pk, name, marker in Group.objects.filter(name__in=list(names)).values_list(
            "pk", "name", "keyrunes_mirror__pk"
        )
    }


def get_mapper() -> UserMapper:
    """An instance of the class named by ``KEYRUNES["USER_MAPPER"]``."""
    mapper_class = keyrunes_settings.USER_MAPPER
    if not (isinstance(mapper_class, type) and issubclass(mapper_class, UserMapper)):
        raise ImproperlyConfigured(
            "KEYRUNES['USER_MAPPER'] must name a subclass of keyrunes_django.mapping.UserMapper."
        )
    return mapper_class()

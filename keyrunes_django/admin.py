"""Django admin integration.

* The user admin gets a read-only :class:`KeyrunesIdentity` inline, the fields
  the mapper manages become read-only (and are listed as "mirrored from
  Keyrunes") for mirrored users, and a "Resync from Keyrunes" action re-reads
  the selected users through the admin API and mirrors them with the login
  mapper.
* The group admin shows which groups are mirrored (a column and a filter);
  groups without a marker are local-only.

The user admin registered for ``AUTH_USER_MODEL`` when this module is imported
is extended in place. A project that registers its own user admin later can
mix :class:`KeyrunesUserAdminMixin` into it instead.
"""

from __future__ import annotations

import functools
import json
from collections import defaultdict
from collections.abc import Sequence
from typing import Any, cast

import django.contrib.auth.admin  # noqa: F401  (registers User and Group first)
from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db.models import Model, QuerySet
from django.http import HttpRequest
from django.utils.html import format_html
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _

from keyrunes_django.conf import keyrunes_settings
from keyrunes_django.mapping import FLAG_FIELDS
from keyrunes_django.models import KeyrunesIdentity, MirroredGroup, TokenRevocation

__all__ = [
    "KeyrunesGroupAdminMixin",
    "KeyrunesIdentityAdmin",
    "KeyrunesIdentityInline",
    "KeyrunesUserAdminMixin",
    "MirroredFilter",
    "resync_users",
]

MIRRORED_NOTE = _(
    "Fields shown read-only are mirrored from Keyrunes and overwritten at each login or "
    "sync: change them in Keyrunes, then use the “Resync from Keyrunes” action."
)


#: What the identity inline and admin show, all read-only.
_IDENTITY_FIELDS = (
    "namespace",
    "remote_user_id",
    "organization_id",
    "external_id",
    "last_synced_at",
    "deactivated_at",
    "tokens_not_before",
    "payload_display",
)


class _ReadOnlyIdentity:
    """Shared by the identity inline and admin: nothing is added or changed locally."""

    @admin.display(description=_("Tokens refused if issued before"))
    def tokens_not_before(self, record: KeyrunesIdentity) -> str:
        revocation = TokenRevocation.objects.filter(
            namespace=record.namespace, remote_user_id=record.remote_user_id
        ).first()
        if revocation is None:
            return "-"
        reason = revocation.reason or gettext("no reason")
        return f"{revocation.not_before.isoformat()} ({reason})"

    @admin.display(description=_("Remote data"))
    def payload_display(self, record: KeyrunesIdentity) -> str:
        return format_html("<pre>{}</pre>", json.dumps(record.payload, indent=2, sort_keys=True))

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class KeyrunesIdentityInline(_ReadOnlyIdentity, admin.StackedInline):  # type: ignore[type-arg]
    """The remote identity behind a user; everything here is read-only."""

    model = KeyrunesIdentity
    can_delete = False
    extra = 0
    max_num = 0
    verbose_name = _("Keyrunes identity (mirrored from Keyrunes, read-only)")
    verbose_name_plural = verbose_name
    fields = _IDENTITY_FIELDS
    readonly_fields = fields


def mirrored_user_fields() -> list[str]:
    """The local user fields the mapper writes: USER_ATTR_MAP targets and managed flags."""
    user_model = get_user_model()
    model_fields = {field.name for field in user_model._meta.concrete_fields}
    names = [name for name in (keyrunes_settings.USER_ATTR_MAP or {}) if name in model_fields]
    flags_by_group = keyrunes_settings.FLAGS_BY_GROUP or {}
    managed_flags = {"is_staff", "is_superuser"} | {
        flag for flag, groups in flags_by_group.items() if groups is not None
    }
    managed_flags -= {flag for flag, groups in flags_by_group.items() if groups is None}
    names += [flag for flag in FLAG_FIELDS if flag in managed_flags and flag in model_fields]
    return names


class KeyrunesUserAdminMixin:
    """Adds the identity inline, read-only mirrored fields and the resync action."""

    def get_inlines(self, request: HttpRequest, obj: Any) -> Sequence[Any]:
        inlines = list(super().get_inlines(request, obj))  # type: ignore[misc]
        if obj is not None and _identity_of(obj) is not None:
            inlines.append(KeyrunesIdentityInline)
        return inlines

    def get_list_display(self, request: HttpRequest) -> Sequence[Any]:
        return [*super().get_list_display(request), "keyrunes_linked"]  # type: ignore[misc]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Sequence[str]:
        fields = list(super().get_readonly_fields(request, obj))  # type: ignore[misc]
        if obj is not None and _identity_of(obj) is not None:
            fields += [name for name in mirrored_user_fields() if name not in fields]
            fields.append("keyrunes_mirrored_fields")
        return fields

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        fieldsets = list(super().get_fieldsets(request, obj))  # type: ignore[misc]
        if obj is not None and _identity_of(obj) is not None:
            fieldsets.insert(
                0,
                (
                    "Keyrunes",
                    {"fields": ("keyrunes_mirrored_fields",), "description": MIRRORED_NOTE},
                ),
            )
        return fieldsets

    @admin.display(description=_("Mirrored from Keyrunes (read-only)"))
    def keyrunes_mirrored_fields(self, obj: Any) -> str:
        user_model = get_user_model()
        labels = [
            str(getattr(user_model._meta.get_field(name), "verbose_name", name))
            for name in mirrored_user_fields()
        ]
        labels.append(gettext("membership of mirrored groups"))
        return ", ".join(labels)

    @admin.display(boolean=True, description="Keyrunes")
    def keyrunes_linked(self, obj: Any) -> bool:
        return _identity_of(obj) is not None

    @admin.action(
        description=_("Sign out everywhere (refuse their Keyrunes tokens issued before now)")
    )
    def sign_out_everywhere(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        from keyrunes_django.revocation import revoke_user_tokens

        model_admin: Any = self
        done = 0
        for user in queryset:
            if revoke_user_tokens(user, reason="admin", request=request) is not None:
                done += 1
        skipped = len(queryset) - done
        model_admin.message_user(
            request,
            ngettext(
                "Signed out everywhere: %(count)d user(s).",
                "Signed out everywhere: %(count)d user(s).",
                done,
            )
            % {"count": done},
        )
        if skipped:
            model_admin.message_user(
                request,
                ngettext(
                    "%(count)d user(s) are not Keyrunes users and were left alone.",
                    "%(count)d user(s) are not Keyrunes users and were left alone.",
                    skipped,
                )
                % {"count": skipped},
                level=messages.WARNING,
            )

    @admin.action(description=_("Resync from Keyrunes"))
    def resync_from_keyrunes(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        outcome = resync_users(queryset)
        model_admin: Any = self
        for level, text in outcome:
            model_admin.message_user(request, text, level=level)


def _identity_of(user: Any) -> KeyrunesIdentity | None:
    try:
        record = user.keyrunes_identity
    except KeyrunesIdentity.DoesNotExist:
        return None
    return record if isinstance(record, KeyrunesIdentity) else None


def resync_users(users: QuerySet[Any]) -> list[tuple[int, str]]:
    """Re-read the given users from Keyrunes and mirror them; (message level, text) pairs.

    One admin API listing per organization involved; each user is mirrored with
    :meth:`~keyrunes_django.mapping.UserMapper.mirror`, exactly as at login.
    """
    from keyrunes_django.client import get_client
    from keyrunes_django.exceptions import KeyrunesError, MirrorRefused, ServiceAccountError
    from keyrunes_django.mapping import get_mapper
    from keyrunes_django.service_account import admin_call

    records = list(KeyrunesIdentity.objects.filter(user__in=users).select_related("user"))
    result: list[tuple[int, str]] = []
    skipped = users.count() - len(records)
    if skipped:
        text = ngettext(
            "%(count)d selected user(s) are local only: skipped.",
            "%(count)d selected user(s) are local only: skipped.",
            skipped,
        )
        result.append((messages.WARNING, text % {"count": skipped}))
    by_scope: dict[tuple[str, int | None], list[KeyrunesIdentity]] = defaultdict(list)
    for record in records:
        by_scope[(record.namespace, record.organization_id)].append(record)
    client = get_client()
    mapper = get_mapper()
    synced = unchanged = 0
    for (namespace, organization_id), group in sorted(
        by_scope.items(), key=lambda item: (item[0][0], item[0][1] or 0)
    ):
        try:
            listing = admin_call(functools.partial(_list_users, client, org_id=organization_id))
        except ServiceAccountError as exc:
            text = gettext('Resync failed: %(error)s (check KEYRUNES["SERVICE_ACCOUNT"]).')
            result.append((messages.ERROR, text % {"error": exc}))
            return result
        except KeyrunesError as exc:
            text = gettext("Resync of namespace %(namespace)s failed: %(error)s. Nothing changed.")
            result.append((messages.ERROR, text % {"namespace": namespace, "error": exc}))
            continue
        remote = {user.user_id: user for user in listing}
        org = organization_id if organization_id is not None else 0
        for record in group:
            found = remote.get(record.remote_user_id)
            name = record.user.get_username()
            if found is None:
                text = gettext(
                    "%(user)s: not found in Keyrunes (namespace %(namespace)s); left as is. "
                    "keyrunes_sync_users --deactivate-missing deactivates such users."
                )
                result.append((messages.WARNING, text % {"user": name, "namespace": namespace}))
                continue
            try:
                outcome = mapper.mirror(found.to_identity(namespace, org))
            except MirrorRefused as exc:
                text = gettext("%(user)s: not mirrored (%(reason)s): %(error)s")
                result.append(
                    (messages.WARNING, text % {"user": name, "reason": exc.reason, "error": exc})
                )
                continue
            if outcome.changed:
                synced += 1
            else:
                unchanged += 1
    if synced or unchanged:
        text = gettext("Resynced from Keyrunes: %(synced)d updated, %(unchanged)d unchanged.")
        result.append((messages.SUCCESS, text % {"synced": synced, "unchanged": unchanged}))
    return result


def _list_users(client: Any, token: str, *, org_id: int | None) -> list[Any]:
    return list(client.list_users(token, org_id))


# --------------------------------------------------------------------- groups


class MirroredFilter(admin.SimpleListFilter):
    title = _("mirrored from Keyrunes")
    parameter_name = "keyrunes_mirrored"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("yes", gettext("Mirrored from Keyrunes")), ("no", gettext("Local only"))]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() == "yes":
            return queryset.filter(keyrunes_mirror__isnull=False)
        if self.value() == "no":
            return queryset.filter(keyrunes_mirror__isnull=True)
        return queryset


class KeyrunesGroupAdminMixin:
    """Marks mirrored groups in the group admin (column, filter, change-form note)."""

    def get_list_display(self, request: HttpRequest) -> Sequence[Any]:
        display = list(super().get_list_display(request))  # type: ignore[misc]
        return [*display, "keyrunes_mirrored", "keyrunes_remote"]

    def get_list_filter(self, request: HttpRequest) -> Sequence[Any]:
        return [*super().get_list_filter(request), MirroredFilter]  # type: ignore[misc]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Sequence[str]:
        fields = list(super().get_readonly_fields(request, obj))  # type: ignore[misc]
        return [*fields, "keyrunes_source"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        return super().get_queryset(request).select_related("keyrunes_mirror")  # type: ignore[misc,no-any-return]

    @admin.display(boolean=True, description=_("Mirrored from Keyrunes"))
    def keyrunes_mirrored(self, group: Group) -> bool:
        return _mirror_of(group) is not None

    @admin.display(description=_("Keyrunes group"))
    def keyrunes_remote(self, group: Group) -> str:
        marker = _mirror_of(group)
        return f"{marker.namespace}:{marker.remote_name}" if marker else "—"

    @admin.display(description=_("Source"))
    def keyrunes_source(self, group: Group) -> str:
        marker = _mirror_of(group)
        if marker is None:
            return gettext("Local group (never changed by Keyrunes).")
        text = gettext(
            "Mirrored from Keyrunes group “%(group)s” (namespace %(namespace)s): memberships "
            "are managed by logins and keyrunes_sync_users; keyrunes_sync_groups --prune "
            "deletes it when the remote group is gone."
        )
        return text % {"group": marker.remote_name, "namespace": marker.namespace}


def _mirror_of(group: Group) -> MirroredGroup | None:
    try:
        # cast: whether mypy sees the reverse one-to-one depends on the plugin's app loading.
        marker = cast(Any, group).keyrunes_mirror
    except MirroredGroup.DoesNotExist:
        return None
    return marker if isinstance(marker, MirroredGroup) else None


@admin.register(KeyrunesIdentity)
class KeyrunesIdentityAdmin(_ReadOnlyIdentity, admin.ModelAdmin):  # type: ignore[type-arg]
    """A read-only list of every mirrored identity, searchable by remote id."""

    list_display = ("user", "namespace", "remote_user_id", "organization_id", "last_synced_at")
    list_filter = ("namespace", "organization_id")
    search_fields = ("remote_user_id", "external_id", "namespace")
    list_select_related = ("user",)
    readonly_fields = ("user", *_IDENTITY_FIELDS)
    fields = readonly_fields


def _extend(model: type[Model], mixin: type, extra_actions: Sequence[str] = ()) -> None:
    """Re-register ``model``'s current admin with ``mixin`` mixed in."""
    if not admin.site.is_registered(model):
        return
    current = type(admin.site._registry[model])
    if issubclass(current, mixin):
        return
    attrs: dict[str, Any] = {"__module__": __name__}
    if extra_actions:
        attrs["actions"] = [*(current.actions or ()), *extra_actions]
    extended = type(f"Keyrunes{current.__name__}", (mixin, current), attrs)
    admin.site.unregister(model)
    admin.site.register(model, extended)


_extend(
    get_user_model(),
    KeyrunesUserAdminMixin,
    extra_actions=["resync_from_keyrunes", "sign_out_everywhere"],
)


@admin.register(TokenRevocation)
class TokenRevocationAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Each user's not-before: their tokens issued earlier are refused."""

    list_display = ("namespace", "remote_user_id", "not_before", "reason", "updated_at")
    list_filter = ("namespace", "reason")
    search_fields = ("remote_user_id",)
    readonly_fields = ("namespace", "remote_user_id", "not_before", "reason", "updated_at")

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


_extend(Group, KeyrunesGroupAdminMixin)

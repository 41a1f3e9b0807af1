"""Local records of Keyrunes users and groups.

A :class:`KeyrunesIdentity` ties a Django user to one remote user, keyed on
(namespace, remote user id): Keyrunes user ids are only unique inside a
namespace. A :class:`MirroredGroup` marks a Django group as managed by the
mirror; groups without one are local-only and the mirror never touches them.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.models import Group
from django.db import models
from django.utils.translation import gettext_lazy as _

__all__ = ["KeyrunesIdentity", "MirroredGroup", "TokenRevocation"]


class KeyrunesIdentity(models.Model):
    """The remote Keyrunes user behind a local user."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="keyrunes_identity",
    )
    namespace = models.CharField(max_length=63)
    remote_user_id = models.BigIntegerField()
    organization_id = models.BigIntegerField(null=True, blank=True)
    external_id = models.CharField(max_length=64, blank=True, default="")
    last_synced_at = models.DateTimeField(null=True, blank=True)
    payload = models.JSONField(default=dict, blank=True)
    # Set when keyrunes_sync_users deactivated the user because Keyrunes no
    # longer listed it, so the user is reactivated once Keyrunes knows it again
    # (users deactivated by hand stay inactive).
    deactivated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = _("Keyrunes identity")
        verbose_name_plural = _("Keyrunes identities")
        constraints = [
            models.UniqueConstraint(
                fields=["namespace", "remote_user_id"],
                name="keyrunes_identity_unique_remote_user",
            )
        ]

    def __str__(self) -> str:
        return f"{self.namespace}:{self.remote_user_id}"


class MirroredGroup(models.Model):
    """Marks a Django group as mirrored from Keyrunes."""

    group = models.OneToOneField(Group, on_delete=models.CASCADE, related_name="keyrunes_mirror")
    remote_name = models.CharField(max_length=150)
    namespace = models.CharField(max_length=63)
    organization_id = models.BigIntegerField(null=True, blank=True)
    last_synced_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = _("mirrored Keyrunes group")
        verbose_name_plural = _("mirrored Keyrunes groups")

    def __str__(self) -> str:
        return f"{self.namespace}:{self.remote_name}"


class TokenRevocation(models.Model):
    """Tokens of one remote user issued before ``not_before`` are refused.

    Keyed on (namespace, remote user id) like :class:`KeyrunesIdentity`, but
    independent of it: a user can be revoked before or without a local row.
    """

    namespace = models.CharField(max_length=63)
    remote_user_id = models.BigIntegerField()
    not_before = models.DateTimeField()
    reason = models.CharField(max_length=64, blank=True, default="")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = _("Keyrunes token revocation")
        verbose_name_plural = _("Keyrunes token revocations")
        constraints = [
            models.UniqueConstraint(
                fields=["namespace", "remote_user_id"],
                name="keyrunes_revocation_unique_remote_user",
            )
        ]

    def __str__(self) -> str:
        return f"{self.namespace}:{self.remote_user_id} < {self.not_before.isoformat()}"

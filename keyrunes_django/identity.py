"""The verified principals every part of the app hands around.

A :class:`VerifiedIdentity` is what a login, a locally verified token or a
remote ``/api/me`` answer boils down to; the mapper turns it into a Django
user and ``request.keyrunes`` exposes it. An :class:`OrganizationPrincipal` is
the caller behind a valid organization key.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

SUPERADMIN_GROUP = "superadmin"
ADMIN_GROUP = "admin"
USERS_GROUP = "users"
PUBLIC_NAMESPACE = "public"

IdentitySource = Literal["login", "token", "remote", "sync"]


@dataclass(frozen=True)
class VerifiedIdentity:
    """A Keyrunes user as established by a login, a token or the admin API."""

    user_id: int
    username: str
    email: str
    namespace: str
    organization_id: int
    groups: tuple[str, ...] | None = None  # None: the source did not say
    expires_at: datetime | None = None
    issued_at: datetime | None = None
    external_id: str | None = None
    source: IdentitySource = "token"
    payload: dict[str, object] = field(default_factory=dict, compare=False, repr=False)

    @property
    def group_set(self) -> frozenset[str]:
        return frozenset(self.groups or ())

    @property
    def is_global_superadmin(self) -> bool:
        """``superadmin`` counts globally only in the ``public`` namespace."""
        return SUPERADMIN_GROUP in self.group_set and self.namespace == PUBLIC_NAMESPACE

    @property
    def is_tenant_admin(self) -> bool:
        """``admin`` (or a tenant's own ``superadmin``) administers its own namespace."""
        groups = self.group_set
        return ADMIN_GROUP in groups or (
            SUPERADMIN_GROUP in groups and self.namespace != PUBLIC_NAMESPACE
        )

    @property
    def is_admin(self) -> bool:
        return self.is_global_superadmin or self.is_tenant_admin

    def has_any_group(self, names: Iterable[str]) -> bool:
        return not self.group_set.isdisjoint(names)

    def has_all_groups(self, names: Iterable[str]) -> bool:
        return self.group_set.issuperset(names)


@dataclass(frozen=True)
class OrganizationPrincipal:
    """The organization whose key authenticated a request."""

    organization_id: int | None
    name: str | None = None
    namespace: str | None = None

    # Duck-typing with Django users, so permission checks can treat both alike.
    is_authenticated: bool = True
    is_anonymous: bool = False

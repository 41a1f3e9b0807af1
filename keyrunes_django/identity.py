"""The verified principals every part of the app hands around.

A :class:`VerifiedIdentity` is what a login, a locally verified token or a
remote ``/api/me`` answer boils down to; the mapper turns it into a Django
user and ``request.keyrunes`` exposes it. An :class:`OrganizationPrincipal` is
the caller behind a valid organization key.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, TypeVar, cast

SUPERADMIN_GROUP = "superadmin"
ADMIN_GROUP = "admin"
USERS_GROUP = "users"
PUBLIC_NAMESPACE = "public"

IdentitySource = Literal["login", "token", "remote", "sync"]


_V = TypeVar("_V", str, tuple[str, ...], tuple[int, ...])

#: How many distinct values :func:`common_string` and :func:`common_groups` share at most.
COMMON_VALUES_LIMIT = 4096
_common_strings: dict[str, str] = {}
_common_groups: dict[tuple[str, ...], tuple[str, ...]] = {}
_common_positions: dict[tuple[int, ...], tuple[int, ...]] = {}


def common_string(value: str) -> str:
    """One shared object for a value many identities repeat (a namespace, a group name).

    Bounded: past :data:`COMMON_VALUES_LIMIT` distinct values, new ones are
    returned as they are.
    """
    return _shared(_common_strings, value)


def common_groups(groups: Iterable[str]) -> tuple[str, ...]:
    """One shared tuple per distinct group list (or list of claim names), bounded
    like :func:`common_string`."""
    return _shared(_common_groups, tuple(groups))


def _shared(table: dict[_V, _V], value: _V) -> _V:
    shared = table.get(value)
    if shared is not None:
        return shared
    if len(table) < COMMON_VALUES_LIMIT:
        return table.setdefault(value, value)
    return value


@dataclass(frozen=True, slots=True)
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


#: An identity packed into one tuple (see :func:`pack_identity`).
PackedIdentity = tuple[object, ...]
#: Where the (namespace, user id) of a packed identity sit.
PACKED_NAMESPACE = 3
PACKED_USER_ID = 0
#: Packed fields that take part in identity equality (all but the payload).
PACKED_COMPARED = 10

_SCALARS = (str, int, float, bool, type(None))
_FIELDS = (
    "user_id",
    "username",
    "email",
    "namespace",
    "organization_id",
    "groups",
    "expires_at",
    "issued_at",
    "external_id",
    "source",
    "payload",
)


class _Copied:
    """A payload value of no immutable form: each unpacked identity gets a deep copy."""

    __slots__ = ("value",)

    def __init__(self, value: object) -> None:
        self.value = value


def _freeze(value: object) -> object:
    if isinstance(value, _SCALARS):
        return value
    if type(value) is list and all(isinstance(v, str) for v in value):
        return common_groups(value)  # a list of names, such as the groups claim
    return _Copied(copy.deepcopy(value))


def _thaw(value: object) -> object:
    if type(value) is tuple:
        return list(value)
    return copy.deepcopy(value.value)  # type: ignore[attr-defined]


def pack_identity(identity: VerifiedIdentity) -> PackedIdentity:
    """A compact form of an identity, for processes that remember thousands.

    About half the memory of the identity with its payload dict: claim names
    and repeated values are shared, and the payload's values sit in a tuple.
    """
    payload = identity.payload
    values = tuple(_freeze(value) for value in payload.values())
    thawed = tuple(i for i, value in enumerate(values) if not isinstance(value, _SCALARS))
    return (
        *compared_fields(identity),
        common_groups(payload),
        values,
        _shared(_common_positions, thawed),
    )


def compared_fields(identity: VerifiedIdentity) -> PackedIdentity:
    """The fields identities compare by (all but the payload), in packed order.

    ``pack_identity(a)[:PACKED_COMPARED] == compared_fields(b)`` exactly when ``a == b``.
    """
    return (
        identity.user_id,
        identity.username,
        identity.email,
        identity.namespace,
        identity.organization_id,
        identity.groups,
        identity.expires_at,
        identity.issued_at,
        identity.external_id,
        identity.source,
    )


_new_identity = object.__new__
_SETTERS = tuple(VerifiedIdentity.__dict__[name].__set__ for name in _FIELDS)


def unpack_identity(packed: PackedIdentity) -> VerifiedIdentity:
    """The identity :func:`pack_identity` packed: a new object, with a payload dict of its own.

    Built without ``__init__`` (its checks ran when the identity was first
    made): this runs for every request a process answers from memory.
    """
    keys = cast("tuple[str, ...]", packed[10])
    values = cast("tuple[object, ...]", packed[11])
    payload = dict(zip(keys, values, strict=True))
    for i in cast("tuple[int, ...]", packed[12]):
        payload[keys[i]] = _thaw(values[i])
    identity = _new_identity(VerifiedIdentity)
    for setter, value in zip(_SETTERS, packed[:10], strict=False):
        setter(identity, value)
    _SETTERS[10](identity, payload)
    return identity

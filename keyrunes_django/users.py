"""User objects that are not rows of the user model.

* :class:`StatelessUser` is a ``request.user`` built from a verified Keyrunes
  identity alone: no database row is read or written, no query is made (the
  role simplejwt's ``TokenUser`` plays). The bearer-token path hands one out
  when ``KEYRUNES["STATELESS_USERS"]`` is true.
* :class:`OrganizationUser` is ``request.user`` for a request authenticated by
  an organization key, through the middleware and through DRF alike.
"""

from __future__ import annotations

from typing import Any, NoReturn

from django.contrib.auth.models import AnonymousUser
from django.http import HttpRequest

from keyrunes_django.identity import OrganizationPrincipal, VerifiedIdentity

__all__ = ["OrganizationUser", "StatelessUser", "attach_user"]


class StatelessUser:
    """A Keyrunes user as a ``request.user``, with no database row.

    * ``pk`` and ``id`` are the **remote** Keyrunes user id. They are no local
      primary key: never store them in a foreign key to ``AUTH_USER_MODEL``.
      Two namespaces can hold the same id; equality compares (namespace, id).
    * ``username``, ``email``, ``namespace``, ``organization_id`` come from the
      identity; ``groups`` is the tuple of Keyrunes group names (not a
      related manager: there is no row to relate to).
    * ``is_authenticated`` is always true, ``is_anonymous`` false,
      ``is_active`` true (a verified identity is an active one).
    * ``is_staff`` and ``is_superuser`` are what the mirror would store on a
      Django user for the same identity: :meth:`UserMapper.flags
      <keyrunes_django.mapping.UserMapper.flags>` (global superadmin ->
      superuser, any Keyrunes admin -> staff, unless ``FLAGS_BY_GROUP`` says
      otherwise); without a group list both are false.
    * ``has_perm`` / ``has_perms`` / ``has_module_perms`` answer Django
      *model* permissions the way Django does for a user with no permission
      rows: true for an active superuser, false otherwise. Django
      permissions live in the database, which this user never reads; ask
      Keyrunes policies with :func:`keyrunes_django.access.has_permission`.
    * ``save()``, ``delete()`` and the password methods raise
      ``NotImplementedError``.
    """

    is_active = True
    is_anonymous = False
    is_authenticated = True

    def __init__(self, identity: VerifiedIdentity) -> None:
        if not isinstance(identity, VerifiedIdentity):
            raise TypeError(
                f"StatelessUser needs a VerifiedIdentity, not {type(identity).__name__}"
            )
        self.identity = identity
        flags = _admin_flags(identity)
        self.is_staff: bool = flags.get("is_staff", False)
        self.is_superuser: bool = flags.get("is_superuser", False)

    @classmethod
    def from_identity(cls, identity: VerifiedIdentity) -> StatelessUser:
        """The user for ``identity`` (the same as ``StatelessUser(identity)``)."""
        return cls(identity)

    # ------------------------------------------------------------ who it is

    @property
    def pk(self) -> int:
        return self.identity.user_id

    @property
    def id(self) -> int:
        return self.identity.user_id

    @property
    def username(self) -> str:
        return self.identity.username

    @property
    def email(self) -> str:
        return self.identity.email

    @property
    def namespace(self) -> str:
        return self.identity.namespace

    @property
    def organization_id(self) -> int:
        return self.identity.organization_id

    @property
    def groups(self) -> tuple[str, ...]:
        return tuple(self.identity.groups or ())

    def get_username(self) -> str:
        return self.identity.username

    def natural_key(self) -> tuple[str]:
        return (self.identity.username,)

    def __str__(self) -> str:
        return self.identity.username

    def __repr__(self) -> str:
        return f"<StatelessUser {self.identity.namespace}:{self.identity.user_id}>"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, StatelessUser):
            return NotImplemented
        return (other.namespace, other.pk) == (self.namespace, self.pk)

    def __hash__(self) -> int:
        return hash((StatelessUser, self.namespace, self.pk))

    # ----------------------------------------------------- Django permissions

    def has_perm(self, perm: str, obj: Any = None) -> bool:
        return self.is_active and self.is_superuser

    def has_perms(self, perm_list: Any, obj: Any = None) -> bool:
        return all(self.has_perm(perm, obj) for perm in perm_list)

    def has_module_perms(self, app_label: str) -> bool:
        return self.is_active and self.is_superuser

    def get_user_permissions(self, obj: Any = None) -> set[str]:
        return set()

    def get_group_permissions(self, obj: Any = None) -> set[str]:
        return set()

    def get_all_permissions(self, obj: Any = None) -> set[str]:
        return set()

    # ------------------------------------------------------------- no row

    def _no_row(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise NotImplementedError("A StatelessUser has no database row.")

    save = delete = set_password = check_password = set_unusable_password = _no_row


def _admin_flags(identity: VerifiedIdentity) -> dict[str, bool]:
    # The mirror's own rule (including FLAGS_BY_GROUP and a custom
    # USER_MAPPER), so both kinds of user agree on staff and superuser.
    from keyrunes_django.mapping import get_mapper

    return get_mapper().flags(identity)


class OrganizationUser(AnonymousUser):
    """``request.user`` for a request authenticated by an organization key.

    It is *authenticated* (``IsAuthenticated`` and ``login_required`` let it
    through: a valid key is a known caller) but it is no Django user: no pk,
    no local permissions, never staff. Views that serve people only should
    check ``request.keyrunes`` (an :class:`OrganizationPrincipal`) or use the
    authorization helpers, which tell the two apart.
    """

    def __init__(self, principal: OrganizationPrincipal) -> None:
        self.principal = principal

    @property
    def organization_id(self) -> int | None:
        return self.principal.organization_id

    @property
    def is_anonymous(self) -> bool:  # type: ignore[override]
        return False

    @property
    def is_authenticated(self) -> bool:  # type: ignore[override]
        return True

    def __str__(self) -> str:
        return f"organization:{self.principal.organization_id or 'unknown'}"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, OrganizationUser) and other.principal == self.principal

    def __hash__(self) -> int:
        return hash(self.principal)


def attach_user(request: HttpRequest, user: Any) -> None:
    """Make ``user`` the request's user, for ``request.user`` and ``await request.auser()``."""
    request.user = user

    async def auser() -> Any:
        return user

    request.auser = auser

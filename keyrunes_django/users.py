"""User objects that are not rows of the user model.

:class:`OrganizationUser` is ``request.user`` for a request authenticated by an
organization key, through the middleware and through DRF alike.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AnonymousUser
from django.http import HttpRequest

from keyrunes_django.identity import OrganizationPrincipal


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

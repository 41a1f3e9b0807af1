"""django-ninja authentication and checks backed by Keyrunes.

::

    from ninja import NinjaAPI, Router
    from keyrunes_django.ninja import (
        KeyrunesBearer, KeyrunesOrganizationKey, register_exception_handlers, require_group,
    )

    api = NinjaAPI(auth=[KeyrunesBearer(), KeyrunesOrganizationKey()])
    register_exception_handlers(api)   # 401 with reason + WWW-Authenticate, 403, 503

    @api.get("/me")
    def me(request): ...

    @api.get("/editors", auth=KeyrunesBearer(groups=["editors"]))
    def editors(request): ...

    @api.get("/docs/{slug}")
    @require_permission("docs:{slug}", "read")
    def doc(request, slug: str): ...

Both auth classes verify through :mod:`keyrunes_django.tokens` (same cache,
tenancy, outage policy and revocation as the middleware and DRF) and set
``request.auth``, ``request.keyrunes`` (the principal) and, for tokens,
``request.user`` (the mirrored user), so the functions of
:mod:`keyrunes_django.authorization` work in operations.

Refusals raise :class:`KeyrunesNotAuthenticated` (401),
:class:`KeyrunesForbidden` (403) and :class:`KeyrunesServiceUnavailable`
(503), subclasses of ninja's ``HttpError``: ninja's default handler answers
them with ``{"detail": ...}`` and the right status;
:func:`register_exception_handlers` gives the app's usual bodies (``error``,
``reason``, ``detail``) with ``WWW-Authenticate`` and ``Retry-After``.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from asgiref.sync import sync_to_async
from django.http import HttpRequest, HttpResponse
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, AuthorizationError, HttpError
from ninja.security import APIKeyHeader, HttpBearer

from keyrunes_django import access
from keyrunes_django.authorization import (
    has_group,
    has_permission,
    is_admin,
    is_authenticated,
)
from keyrunes_django.credentials import USER_REFUSED, parse_authorization_header
from keyrunes_django.exceptions import InvalidToken, KeyrunesUnavailable, MirrorRefused
from keyrunes_django.identity import OrganizationPrincipal, VerifiedIdentity
from keyrunes_django.responses import (
    UNAVAILABLE,
    forbidden_response,
    localized,
    service_unavailable_response,
    unauthorized_response,
    www_authenticate,
)
from keyrunes_django.tokens import (
    authenticate_organization_key,
    authenticate_token_user,
    get_authenticator,
)

if TYPE_CHECKING:
    from django_stubs_ext import StrOrPromise

__all__ = [
    "KeyrunesBearer",
    "KeyrunesForbidden",
    "KeyrunesNotAuthenticated",
    "KeyrunesOrganizationKey",
    "KeyrunesServiceUnavailable",
    "register_exception_handlers",
    "require_admin",
    "require_group",
    "require_permission",
]

Operation = TypeVar("Operation", bound=Callable[..., Any])

NOT_AUTHENTICATED = access.NOT_AUTHENTICATED


class KeyrunesNotAuthenticated(AuthenticationError):
    """401: a refused credential (``reason`` says why) or none at all."""

    def __init__(self, description: StrOrPromise, *, reason: str, scheme: str = "Bearer") -> None:
        super().__init__(401, localized(description))
        self.reason = reason
        self.description = description
        self.scheme = scheme


class KeyrunesForbidden(AuthorizationError):
    """403: an authenticated caller without the required group, admin status or policy."""

    def __init__(self, description: StrOrPromise, *, reason: str = "forbidden") -> None:
        super().__init__(403, localized(description))
        self.reason = reason
        self.description = description


class KeyrunesServiceUnavailable(HttpError):
    """503: Keyrunes cannot be asked and no usable cached answer exists."""

    def __init__(self) -> None:
        super().__init__(503, localized(UNAVAILABLE))


# ------------------------------------------------------------------- checks


def _check(
    request: HttpRequest,
    *,
    groups: tuple[str, ...] = (),
    all_groups: bool = False,
    admin: bool = False,
    permission: tuple[str, str] | None = None,
    context: Mapping[str, Any] | None = None,
) -> None:
    """Raise the refusal for the first requirement the caller does not meet."""
    if not is_authenticated(request, allow_organization=True):
        raise KeyrunesNotAuthenticated(NOT_AUTHENTICATED, reason="not_authenticated")
    if groups and not has_group(request, *groups, all_groups=all_groups):
        raise KeyrunesForbidden(
            access.groups_message(groups, all_groups=all_groups), reason="missing_group"
        )
    if admin and not is_admin(request):
        raise KeyrunesForbidden(access.ADMIN_REQUIRED, reason="not_admin")
    if permission is not None:
        resource, action = permission
        if not has_permission(request, resource, action, context):
            raise KeyrunesForbidden(
                access.permission_message(resource, action), reason="policy_denied"
            )


def _group_names(groups: Iterable[str] | str) -> tuple[str, ...]:
    names = (groups,) if isinstance(groups, str) else tuple(groups)
    if not all(isinstance(name, str) and name for name in names):
        raise TypeError("group names must be non-empty strings")
    return names


class _Requirements:
    """The checks an auth instance applies after verifying the credential."""

    def __init__(
        self,
        groups: Iterable[str] | str,
        all_groups: bool,
        admin: bool,
        permission: tuple[str, str] | None,
    ) -> None:
        self.groups = _group_names(groups)
        self.all_groups = all_groups
        self.admin = admin
        if permission is not None and (
            len(permission) != 2 or not all(isinstance(p, str) and p for p in permission)
        ):
            raise TypeError("permission must be a (resource, action) pair of strings")
        self.permission = permission

    def enforce(self, request: HttpRequest) -> None:
        _check(
            request,
            groups=self.groups,
            all_groups=self.all_groups,
            admin=self.admin,
            permission=self.permission,
        )


# --------------------------------------------------------------- auth classes


class KeyrunesBearer(HttpBearer):
    """``Authorization: Bearer <Keyrunes JWT>``; ``request.auth`` is the VerifiedIdentity.

    ``groups``/``all_groups``, ``admin`` and ``permission=(resource, action)``
    add checks (403 when unmet), so ``Router(auth=KeyrunesBearer(admin=True))``
    guards a whole router.
    """

    openapi_bearerFormat = "JWT"

    def __init__(
        self,
        *,
        groups: Iterable[str] | str = (),
        all_groups: bool = False,
        admin: bool = False,
        permission: tuple[str, str] | None = None,
    ) -> None:
        self.requirements = _Requirements(groups, all_groups, admin, permission)
        super().__init__()

    def __call__(self, request: HttpRequest) -> VerifiedIdentity | None:
        # The app's own header rules (scheme case, token syntax, size), not ninja's split.
        try:
            token = parse_authorization_header(request.headers.get(self.header))
        except InvalidToken as exc:
            raise KeyrunesNotAuthenticated(exc.message, reason=exc.reason) from None
        if token is None:
            return None
        return self.authenticate(request, token)

    def authenticate(self, request: HttpRequest, token: str) -> VerifiedIdentity | None:
        try:
            user, identity = authenticate_token_user(token, request=request)
        except InvalidToken as exc:
            raise KeyrunesNotAuthenticated(exc.message, reason=exc.reason) from None
        except MirrorRefused as exc:
            raise KeyrunesForbidden(USER_REFUSED, reason=exc.reason) from None
        except KeyrunesUnavailable as exc:
            if get_authenticator().fail_open(exc, request):
                return None
            raise KeyrunesServiceUnavailable() from None
        request.user = user
        request.keyrunes = identity  # type: ignore[attr-defined]
        self.requirements.enforce(request)
        return identity


class KeyrunesOrganizationKey(APIKeyHeader):
    """``X-Organization-Key: <uuid>``; ``request.auth`` is the OrganizationPrincipal.

    An organization has no groups, admin status or user policies, so only
    ``organization_id`` may be required (403 for a key of another organization).
    """

    param_name = "X-Organization-Key"

    def __init__(self, *, organization_id: int | None = None) -> None:
        if organization_id is not None and (
            not isinstance(organization_id, int) or isinstance(organization_id, bool)
        ):
            raise TypeError("organization_id must be an integer")
        self.organization_id = organization_id
        super().__init__()

    def authenticate(self, request: HttpRequest, key: str | None) -> OrganizationPrincipal | None:
        if key is None:
            return None
        try:
            principal = authenticate_organization_key(key, request=request)
        except InvalidToken as exc:
            raise KeyrunesNotAuthenticated(
                exc.message, reason=exc.reason, scheme="OrganizationKey"
            ) from None
        except KeyrunesUnavailable as exc:
            if get_authenticator().fail_open(exc, request):
                return None
            raise KeyrunesServiceUnavailable() from None
        request.keyrunes = principal  # type: ignore[attr-defined]
        if self.organization_id is not None and principal.organization_id != self.organization_id:
            raise KeyrunesForbidden(
                f"A valid key of organization {self.organization_id} is required.",
                reason="wrong_organization",
            )
        return principal


# ---------------------------------------------------------------- decorators


Check = Callable[[HttpRequest, Mapping[str, Any]], None]


def _guard(check: Check) -> Callable[[Operation], Operation]:
    """A decorator running ``check(request, kwargs)`` before a sync or async operation."""

    def decorate(func: Operation) -> Operation:
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_operation(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
                # The checks may read the database or ask Keyrunes.
                await sync_to_async(check)(request, kwargs)
                return await func(request, *args, **kwargs)

            return async_operation  # type: ignore[return-value]

        @functools.wraps(func)
        def operation(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
            check(request, kwargs)
            return func(request, *args, **kwargs)

        return operation  # type: ignore[return-value]

    return decorate


def require_group(*groups: str, all_groups: bool = False) -> Callable[[Operation], Operation]:
    """403 unless the caller is in one (or, with ``all_groups``, each) of the groups."""
    if not groups:
        raise TypeError("require_group() needs at least one group name")
    names = _group_names(groups)
    return _guard(lambda request, _: _check(request, groups=names, all_groups=all_groups))


def require_admin() -> Callable[[Operation], Operation]:
    """403 unless the caller is a Keyrunes admin (or a Django superuser)."""
    return _guard(lambda request, _: _check(request, admin=True))


def require_permission(resource: str, action: str) -> Callable[[Operation], Operation]:
    """403 unless a Keyrunes policy allows ``action`` on ``resource``.

    ``{placeholders}`` in ``resource`` are filled from the operation's
    arguments (path and query parameters): ``require_permission("docs:{slug}", "read")``.
    """
    if not isinstance(resource, str) or not resource or not isinstance(action, str) or not action:
        raise TypeError("require_permission() needs a resource and an action string")
    return _guard(
        lambda request, kwargs: _check(request, permission=(resource, action), context=kwargs)
    )


# ---------------------------------------------------------------- responses


def _not_authenticated(request: HttpRequest, exc: Any) -> HttpResponse:
    if isinstance(exc, KeyrunesNotAuthenticated) and exc.reason != "not_authenticated":
        return unauthorized_response(
            request, reason=exc.reason, description=exc.description, scheme=exc.scheme
        )
    # No credential at all (ninja's own AuthenticationError when every auth
    # class passed): a bare challenge, as RFC 6750 asks.
    response = unauthorized_response(
        request, reason="not_authenticated", description=NOT_AUTHENTICATED
    )
    response["WWW-Authenticate"] = www_authenticate(error=None)
    return response


def _forbidden(request: HttpRequest, exc: Any) -> HttpResponse:
    assert isinstance(exc, KeyrunesForbidden)
    return forbidden_response(request, reason=exc.reason, description=exc.description)


def _unavailable(request: HttpRequest, exc: Any) -> HttpResponse:
    return service_unavailable_response(request)


def register_exception_handlers(api: NinjaAPI) -> NinjaAPI:
    """Answer Keyrunes refusals on ``api`` the way the rest of the app does.

    401 with ``WWW-Authenticate`` naming the reason (also when no credential
    was sent), 403, and 503 with
    ``Retry-After``; bodies ``{"error", "reason", "detail"}`` (JSON when the
    client accepts JSON). Returns ``api``.
    """
    api.add_exception_handler(AuthenticationError, _not_authenticated)
    api.add_exception_handler(KeyrunesForbidden, _forbidden)
    api.add_exception_handler(KeyrunesServiceUnavailable, _unavailable)
    return api

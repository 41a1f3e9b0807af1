"""View decorators: ``keyrunes_login_required``, ``require_group``, ``require_admin``,
``require_permission``.

Semantics shared with :mod:`keyrunes_django.mixins`:

* anonymous caller: a redirect to ``LOGIN_URL`` for a browser request, or a
  401 JSON answer for an API request (see :func:`is_api_request`);
* authenticated caller without the right: 403 (``PermissionDenied``);
* ``raise_exception=True``: always ``PermissionDenied``, never a redirect.

An organization-key caller counts as authenticated but has no groups, no
admin status and no user policies, so it gets 403 from every check except
``keyrunes_login_required(allow_organization=True)``.

Sync and async views are both supported; on async views the checks (which may
read the database or ask Keyrunes) run in a thread through ``sync_to_async``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from asgiref.sync import iscoroutinefunction, sync_to_async
from django.contrib.auth import REDIRECT_FIELD_NAME
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponseBase, JsonResponse

from keyrunes_django.authorization import (
    get_identity,
    has_group,
    has_permission,
    is_admin,
    is_authenticated,
)
from keyrunes_django.conf import keyrunes_settings
from keyrunes_django.identity import OrganizationPrincipal
from keyrunes_django.responses import www_authenticate

__all__ = [
    "Refusal",
    "is_api_request",
    "keyrunes_login_required",
    "refuse",
    "require_admin",
    "require_group",
    "require_permission",
]

ViewFunc = TypeVar("ViewFunc", bound=Callable[..., Any])
ResourceArg = str | Callable[..., str]
ContextArg = Mapping[str, Any] | Callable[[HttpRequest], Mapping[str, Any]] | None


@dataclass(frozen=True)
class Refusal:
    """Why a check refused: ``anonymous`` callers may log in, the others may not."""

    anonymous: bool
    message: str


NOT_AUTHENTICATED = "Authentication credentials were not provided."


def is_api_request(request: HttpRequest) -> bool:
    """Whether an anonymous caller should get 401 JSON rather than a login redirect.

    True when the request carries credentials a browser would not send
    (``Authorization`` or ``X-Organization-Key``), is an XHR, asks for JSON in
    ``Accept`` (without also asking for HTML), or its path starts with one of
    ``KEYRUNES["API_PATH_PREFIXES"]`` (default ``/api/``).
    """
    meta = request.META
    if meta.get("HTTP_AUTHORIZATION") or meta.get("HTTP_X_ORGANIZATION_KEY"):
        return True
    if meta.get("HTTP_X_REQUESTED_WITH") == "XMLHttpRequest":
        return True
    accept = str(meta.get("HTTP_ACCEPT", "")).lower()
    if "json" in accept and "text/html" not in accept:
        return True
    prefixes = keyrunes_settings.API_PATH_PREFIXES or ()
    if isinstance(prefixes, str):
        prefixes = (prefixes,)
    return any(request.path.startswith(prefix) for prefix in prefixes)


def _unauthorized(request: HttpRequest, message: str) -> HttpResponseBase:
    # Always JSON (the caller is an API client); no RFC 6750 error code,
    # since no credential was presented or the one presented was not a user's.
    response = JsonResponse(
        {"error": "not_authenticated", "reason": "not_authenticated", "detail": message},
        status=401,
    )
    response["WWW-Authenticate"] = www_authenticate(error=None)
    response["Cache-Control"] = "no-store"
    return response


def refuse(
    request: HttpRequest,
    refusal: Refusal,
    *,
    raise_exception: bool = False,
    login_url: str | None = None,
    redirect_field_name: str = REDIRECT_FIELD_NAME,
) -> HttpResponseBase:
    """Turn a refusal into a redirect, a 401 answer, or ``PermissionDenied``."""
    if refusal.anonymous and not raise_exception:
        if is_api_request(request):
            return _unauthorized(request, refusal.message)
        return redirect_to_login(request.get_full_path(), login_url, redirect_field_name)
    raise PermissionDenied(refusal.message)


# ----------------------------------------------------------------- the checks


def check_login(request: HttpRequest, *, allow_organization: bool = False) -> Refusal | None:
    if is_authenticated(request, allow_organization=allow_organization):
        return None
    if isinstance(get_identity(request), OrganizationPrincipal):
        return Refusal(False, "Organization keys are not accepted here; sign in as a user.")
    return Refusal(True, NOT_AUTHENTICATED)


def _anonymous(request: HttpRequest) -> Refusal | None:
    if is_authenticated(request, allow_organization=True):
        return None
    return Refusal(True, NOT_AUTHENTICATED)


def check_groups(
    request: HttpRequest, groups: tuple[str, ...], *, all_groups: bool = False
) -> Refusal | None:
    refusal = _anonymous(request)
    if refusal is not None:
        return refusal
    if has_group(request, *groups, all_groups=all_groups):
        return None
    names = ", ".join(groups)
    if all_groups:
        return Refusal(False, f"Membership in all of the groups {names} is required.")
    return Refusal(False, f"Membership in one of the groups {names} is required.")


def check_admin(request: HttpRequest) -> Refusal | None:
    refusal = _anonymous(request)
    if refusal is not None:
        return refusal
    if is_admin(request):
        return None
    return Refusal(False, "Keyrunes administrator access is required.")


def check_permission(
    request: HttpRequest, resource: str, action: str, context: Mapping[str, Any] | None
) -> Refusal | None:
    # Callers refuse anonymous requests first (see _anonymous).
    if has_permission(request, resource, action, context):
        return None
    return Refusal(False, f"Permission {action!r} on {resource!r} is required.")


# ------------------------------------------------------------ the decorators

_Check = Callable[..., Refusal | None]


def _access_decorator(
    check: _Check,
    *,
    raise_exception: bool,
    login_url: str | None,
    redirect_field_name: str,
) -> Callable[[ViewFunc], ViewFunc]:
    """Wrap a view so that ``check(request, *args, **kwargs)`` runs first."""

    def decorator(view: ViewFunc) -> ViewFunc:
        def on_refusal(request: HttpRequest, refusal: Refusal) -> HttpResponseBase:
            return refuse(
                request,
                refusal,
                raise_exception=raise_exception,
                login_url=login_url,
                redirect_field_name=redirect_field_name,
            )

        if iscoroutinefunction(view):

            @functools.wraps(view)
            async def async_wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
                refusal = await sync_to_async(check)(request, *args, **kwargs)
                if refusal is not None:
                    return on_refusal(request, refusal)
                return await view(request, *args, **kwargs)

            return cast(ViewFunc, async_wrapper)

        @functools.wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
            refusal = check(request, *args, **kwargs)
            if refusal is not None:
                return on_refusal(request, refusal)
            return view(request, *args, **kwargs)

        return cast(ViewFunc, wrapper)

    return decorator


def _no_bare_use(name: str, value: object) -> None:
    if callable(value):
        raise TypeError(f"@{name} takes arguments: write @{name}(...), with parentheses.")


def keyrunes_login_required(
    view: ViewFunc | None = None,
    *,
    allow_organization: bool = False,
    raise_exception: bool = False,
    login_url: str | None = None,
    redirect_field_name: str = REDIRECT_FIELD_NAME,
) -> Any:
    """Require a signed-in user (session, bearer token, or a local Django user).

    Usable bare (``@keyrunes_login_required``) or with options. An
    organization-key caller passes only with ``allow_organization=True``.
    """

    def check(request: HttpRequest, *args: Any, **kwargs: Any) -> Refusal | None:
        return check_login(request, allow_organization=allow_organization)

    decorator = _access_decorator(
        check,
        raise_exception=raise_exception,
        login_url=login_url,
        redirect_field_name=redirect_field_name,
    )
    if view is not None:
        return decorator(view)
    return decorator


def require_group(
    *groups: str,
    all_groups: bool = False,
    raise_exception: bool = False,
    login_url: str | None = None,
    redirect_field_name: str = REDIRECT_FIELD_NAME,
) -> Callable[[ViewFunc], ViewFunc]:
    """Require membership in any of ``groups`` (every one with ``all_groups=True``)."""
    if not groups:
        raise TypeError("require_group() needs at least one group name")
    for group in groups:
        _no_bare_use("require_group", group)
        if not isinstance(group, str):
            raise TypeError(f"group names must be strings, not {type(group).__name__}")

    def check(request: HttpRequest, *args: Any, **kwargs: Any) -> Refusal | None:
        return check_groups(request, groups, all_groups=all_groups)

    return _access_decorator(
        check,
        raise_exception=raise_exception,
        login_url=login_url,
        redirect_field_name=redirect_field_name,
    )


def require_admin(
    raise_exception: bool = False,
    *,
    login_url: str | None = None,
    redirect_field_name: str = REDIRECT_FIELD_NAME,
) -> Callable[[ViewFunc], ViewFunc]:
    """Require a Keyrunes admin (global superadmin or tenant admin) or a Django superuser."""
    _no_bare_use("require_admin", raise_exception)

    def check(request: HttpRequest, *args: Any, **kwargs: Any) -> Refusal | None:
        return check_admin(request)

    return _access_decorator(
        check,
        raise_exception=raise_exception,
        login_url=login_url,
        redirect_field_name=redirect_field_name,
    )


def build_context(
    context: ContextArg, request: HttpRequest, view_kwargs: Mapping[str, Any]
) -> dict[str, Any]:
    """The view's URL kwargs, overlaid with ``context`` (a mapping or a callable of the request)."""
    merged: dict[str, Any] = dict(view_kwargs)
    if callable(context):
        merged.update(context(request))
    elif context:
        merged.update(context)
    return merged


def require_permission(
    resource: ResourceArg,
    action: str,
    context: ContextArg = None,
    *,
    raise_exception: bool = False,
    login_url: str | None = None,
    redirect_field_name: str = REDIRECT_FIELD_NAME,
) -> Callable[[ViewFunc], ViewFunc]:
    """Require a Keyrunes policy allowing ``action`` on ``resource``.

    ``resource`` is a string whose ``{placeholders}`` are filled from the
    view's URL kwargs and ``context``, or a callable ``(request, *args,
    **kwargs) -> str`` for object-level checks. ``context`` is a mapping or a
    callable of the request returning one.
    """
    _no_bare_use("require_permission", action)

    def check(request: HttpRequest, *args: Any, **kwargs: Any) -> Refusal | None:
        anonymous = _anonymous(request)
        if anonymous is not None:
            return anonymous
        target = resource(request, *args, **kwargs) if callable(resource) else resource
        return check_permission(request, target, action, build_context(context, request, kwargs))

    return _access_decorator(
        check,
        raise_exception=raise_exception,
        login_url=login_url,
        redirect_field_name=redirect_field_name,
    )

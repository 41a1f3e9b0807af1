"""View decorators: ``keyrunes_login_required``, ``require_group``, ``require_admin``,
``require_permission``.

The checks live in :mod:`keyrunes_django.access` and are shared with
:mod:`keyrunes_django.mixins` and :mod:`keyrunes_django.drf.permissions`:

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
from collections.abc import Callable
from typing import Any, TypeVar, cast

from asgiref.sync import iscoroutinefunction, sync_to_async
from django.contrib.auth import REDIRECT_FIELD_NAME
from django.http import HttpRequest, HttpResponseBase

from keyrunes_django.access import (
    ContextArg,
    Refusal,
    build_context,
    check_admin,
    check_groups,
    check_login,
    check_permission,
    is_api_request,
    refuse,
    refuse_anonymous,
)

__all__ = [
    "Refusal",
    "build_context",
    "is_api_request",
    "keyrunes_login_required",
    "refuse",
    "require_admin",
    "require_group",
    "require_permission",
]

ViewFunc = TypeVar("ViewFunc", bound=Callable[..., Any])
ResourceArg = str | Callable[..., str]


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
        # Anonymous callers are refused before a resource callable sees them.
        refusal = refuse_anonymous(request)
        if refusal is not None:
            return refusal
        target = resource(request, *args, **kwargs) if callable(resource) else resource
        return check_permission(request, target, action, build_context(context, request, kwargs))

    return _access_decorator(
        check,
        raise_exception=raise_exception,
        login_url=login_url,
        redirect_field_name=redirect_field_name,
    )

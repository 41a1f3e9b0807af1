"""Class-based view mixins with the semantics of :mod:`keyrunes_django.decorators`.

Put the mixin before the view class::

    class Reports(GroupRequiredMixin, TemplateView):
        required_groups = ("analysts", "auditors")

Anonymous callers are redirected to ``LOGIN_URL`` (401 JSON for API
requests), authenticated callers without the right get 403, and
``raise_exception = True`` always raises ``PermissionDenied``. Async views
(``async def get``) are supported.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from asgiref.sync import sync_to_async
from django.contrib.auth.mixins import AccessMixin
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest, HttpResponseBase

from keyrunes_django.access import (
    Refusal,
    build_context,
    check_admin,
    check_groups,
    check_login,
    check_permission,
    refuse,
    refuse_anonymous,
)

__all__ = [
    "AdminRequiredMixin",
    "GroupRequiredMixin",
    "KeyrunesAccessMixin",
    "KeyrunesLoginRequiredMixin",
    "PermissionRequiredMixin",
]


class KeyrunesAccessMixin(AccessMixin):
    """Runs :meth:`keyrunes_refusal` before ``dispatch``; subclasses define the check."""

    def keyrunes_refusal(self, request: HttpRequest) -> Refusal | None:
        raise NotImplementedError

    def handle_keyrunes_refusal(self, request: HttpRequest, refusal: Refusal) -> HttpResponseBase:
        custom = self.get_permission_denied_message()
        if custom and not refusal.anonymous:
            refusal = Refusal(False, str(custom))
        return refuse(
            request,
            refusal,
            raise_exception=self.raise_exception,
            login_url=self.get_login_url(),
            redirect_field_name=self.get_redirect_field_name(),
        )

    def get_login_url(self) -> str:
        # AccessMixin insists on a login URL; fall back to settings.LOGIN_URL lazily.
        from django.conf import settings

        return str(self.login_url or settings.LOGIN_URL)

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
        if getattr(self, "view_is_async", False):
            return self._async_dispatch(request, *args, **kwargs)
        refusal = self.keyrunes_refusal(request)
        if refusal is not None:
            return self.handle_keyrunes_refusal(request, refusal)
        return super().dispatch(request, *args, **kwargs)  # type: ignore[misc]

    async def _async_dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
        refusal = await sync_to_async(self.keyrunes_refusal)(request)
        if refusal is not None:
            return self.handle_keyrunes_refusal(request, refusal)
        return await super().dispatch(request, *args, **kwargs)  # type: ignore[misc]


class KeyrunesLoginRequiredMixin(KeyrunesAccessMixin):
    """A signed-in user; organization keys only with ``allow_organization = True``."""

    allow_organization: bool = False

    def keyrunes_refusal(self, request: HttpRequest) -> Refusal | None:
        return check_login(request, allow_organization=self.allow_organization)


class GroupRequiredMixin(KeyrunesAccessMixin):
    """Membership in any of ``required_groups`` (all of them with ``all_groups = True``)."""

    required_groups: tuple[str, ...] | list[str] | str = ()
    all_groups: bool = False

    def get_required_groups(self) -> tuple[str, ...]:
        groups = self.required_groups
        if isinstance(groups, str):
            groups = (groups,)
        if not groups:
            raise ImproperlyConfigured(
                f"{type(self).__name__} is missing required_groups "
                "(or override get_required_groups())."
            )
        return tuple(groups)

    def keyrunes_refusal(self, request: HttpRequest) -> Refusal | None:
        return check_groups(request, self.get_required_groups(), all_groups=self.all_groups)


class AdminRequiredMixin(KeyrunesAccessMixin):
    """A Keyrunes admin (global superadmin or tenant admin) or a Django superuser."""

    def keyrunes_refusal(self, request: HttpRequest) -> Refusal | None:
        return check_admin(request)


class PermissionRequiredMixin(KeyrunesAccessMixin):
    """A Keyrunes policy allowing ``required_permission = (resource, action)``.

    ``{placeholders}`` in the resource are filled from the URL kwargs and
    :meth:`get_permission_context`; override :meth:`get_permission_resource`
    for object-level checks (e.g. ``f"docs:{self.get_object().pk}"``).
    """

    required_permission: tuple[str, str] | None = None

    def _required(self) -> tuple[str, str]:
        if not self.required_permission or len(self.required_permission) != 2:
            raise ImproperlyConfigured(
                f"{type(self).__name__} needs required_permission = (resource, action)."
            )
        return self.required_permission

    def get_permission_resource(self) -> str:
        return self._required()[0]

    def get_permission_action(self) -> str:
        return self._required()[1]

    def get_permission_context(self) -> Mapping[str, Any] | None:
        return None

    def keyrunes_refusal(self, request: HttpRequest) -> Refusal | None:
        # Anonymous callers are refused before get_permission_resource() runs
        # (it may load an object they must not learn about).
        refusal = refuse_anonymous(request)
        if refusal is not None:
            return refusal
        context = build_context(
            self.get_permission_context(), request, getattr(self, "kwargs", {}) or {}
        )
        return check_permission(
            request, self.get_permission_resource(), self.get_permission_action(), context
        )

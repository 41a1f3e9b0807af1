"""DRF permission classes backed by Keyrunes groups, admin status and policies.

Each class goes straight into ``permission_classes``, bare or with arguments,
and composes with DRF's ``&``, ``|`` and ``~``::

    permission_classes = [IsKeyrunesAuthenticated & (HasGroup("editors") | IsKeyrunesAdmin)]

Calling a class with arguments (``HasGroup("a", "b")``) returns a configured
*subclass*, which DRF then instantiates with no arguments as usual; so the
result is still a permission class and the operators work on it.

Anonymous callers are refused by every class; DRF turns that into 401 when an
authenticator could have identified them, 403 otherwise.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from django.core.exceptions import ImproperlyConfigured
from rest_framework.permissions import BasePermission, BasePermissionMetaclass
from rest_framework.request import Request

from keyrunes_django.authorization import (
    get_identity,
    has_group,
    has_permission,
    is_admin,
    is_authenticated,
)
from keyrunes_django.identity import OrganizationPrincipal, VerifiedIdentity

if TYPE_CHECKING:
    # rest_framework.views reads DEFAULT_PERMISSION_CLASSES while it is imported,
    # so importing it here would make this module unusable in that setting.
    from rest_framework.views import APIView

__all__ = [
    "HasAllGroups",
    "HasGroup",
    "HasObjectPermission",
    "HasPermission",
    "IsKeyrunesAdmin",
    "IsKeyrunesAuthenticated",
    "IsOrganization",
    "KeyrunesPermission",
]

ContextArg = Mapping[str, Any] | Callable[[Request], Mapping[str, Any]] | None


class _ConfigurableMeta(BasePermissionMetaclass):
    """Calling a permission class *with* arguments configures a subclass."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        if args or kwargs:
            return cls.configure(*args, **kwargs)  # type: ignore[attr-defined]
        return super().__call__()


class KeyrunesPermission(BasePermission, metaclass=_ConfigurableMeta):
    """Base of the Keyrunes permission classes."""

    message: ClassVar[str] = "You do not have permission to perform this action."

    @classmethod
    def configure(cls, *args: Any, **kwargs: Any) -> type[KeyrunesPermission]:
        raise TypeError(f"{cls.__name__} takes no arguments")

    @classmethod
    def _subclass(cls, label: str, attrs: dict[str, Any]) -> type[KeyrunesPermission]:
        attrs.setdefault("__module__", cls.__module__)
        attrs["__qualname__"] = label
        subclass: type[KeyrunesPermission] = type.__new__(type(cls), label, (cls,), attrs)
        return subclass


def _args_label(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> str:
    parts = [repr(a) for a in args] + [f"{k}={v!r}" for k, v in kwargs.items()]
    return ", ".join(parts)


class IsKeyrunesAuthenticated(KeyrunesPermission):
    """A signed-in user; with ``allow_organization=True`` an organization key too."""

    message = "Authentication as a Keyrunes user is required."
    allow_organization: ClassVar[bool] = False

    @classmethod
    def configure(cls, *args: Any, **kwargs: Any) -> type[KeyrunesPermission]:
        if args or set(kwargs) - {"allow_organization"}:
            raise TypeError("IsKeyrunesAuthenticated takes only allow_organization=")
        allow = bool(kwargs.get("allow_organization", False))
        return cls._subclass(
            f"{cls.__name__}({_args_label((), kwargs)})", {"allow_organization": allow}
        )

    def has_permission(self, request: Request, view: APIView) -> bool:
        return is_authenticated(request, allow_organization=self.allow_organization)


class IsKeyrunesAdmin(KeyrunesPermission):
    """Global superadmin, tenant admin (exact group names) or a Django superuser."""

    message = "Keyrunes administrator access is required."

    def has_permission(self, request: Request, view: APIView) -> bool:
        return is_admin(request)


class _GroupPermission(KeyrunesPermission):
    groups: ClassVar[tuple[str, ...]] = ()
    all_groups: ClassVar[bool] = False

    @classmethod
    def configure(cls, *args: Any, **kwargs: Any) -> type[KeyrunesPermission]:
        if kwargs:
            raise TypeError(f"{cls.__name__} takes group names only")
        if not args or not all(isinstance(g, str) and g for g in args):
            raise TypeError(f"{cls.__name__} needs one or more group names")
        names = ", ".join(args)
        quantifier = "all" if cls.all_groups else "one"
        return cls._subclass(
            f"{cls.__name__}({_args_label(args, {})})",
            {
                "groups": tuple(args),
                "message": f"Membership in {quantifier} of the groups {names} is required.",
            },
        )

    def has_permission(self, request: Request, view: APIView) -> bool:
        if not self.groups:
            raise ImproperlyConfigured(
                f"{type(self).__name__} needs group names: {type(self).__name__}('a', 'b')"
            )
        return has_group(request, *self.groups, all_groups=self.all_groups)


class HasGroup(_GroupPermission):
    """Membership in any of the groups: ``HasGroup("editors", "admins")``."""


class HasAllGroups(_GroupPermission):
    """Membership in every one of the groups: ``HasAllGroups("staff", "auditors")``."""

    all_groups = True


class HasPermission(KeyrunesPermission):
    """A Keyrunes policy allowing ``action`` on ``resource``.

    ``{placeholders}`` in the resource are filled from the view's URL kwargs
    and ``context`` (a mapping, or a callable of the request). With
    ``object_level=True`` the check runs in ``has_object_permission``, and the
    object is available as ``{obj}``: ``HasPermission("docs:{obj.pk}", "read",
    object_level=True)``.
    """

    resource: ClassVar[str] = ""
    action: ClassVar[str] = ""
    object_level: ClassVar[bool] = False
    context: ClassVar[ContextArg] = None

    @classmethod
    def configure(cls, *args: Any, **kwargs: Any) -> type[KeyrunesPermission]:
        names = ("resource", "action", "object_level", "context")
        if len(args) > 2 or set(kwargs) - set(names):
            raise TypeError(f"{cls.__name__}(resource, action, *, object_level=, context=)")
        values = dict(zip(names, args, strict=False))
        values.update(kwargs)
        resource, action = values.get("resource"), values.get("action")
        if not isinstance(resource, str) or not resource:
            raise TypeError(f"{cls.__name__} needs a resource string")
        if not isinstance(action, str) or not action:
            raise TypeError(f"{cls.__name__} needs an action string")
        context = values.get("context")
        attrs: dict[str, Any] = {
            "resource": resource,
            "action": action,
            "object_level": bool(values.get("object_level", cls.object_level)),
            # A plain function stored on a class would turn into a method.
            "context": staticmethod(context) if callable(context) else context,
            "message": f"Permission {action!r} on {resource!r} is required.",
        }
        return cls._subclass(f"{cls.__name__}({_args_label(args, kwargs)})", attrs)

    def _context(self, request: Request, view: APIView, **extra: Any) -> dict[str, Any]:
        merged: dict[str, Any] = dict(getattr(view, "kwargs", None) or {})
        merged.update(view=view, request=request)
        context: Any = type(self).context
        if callable(context):
            merged.update(context(request))
        elif context:
            merged.update(context)
        merged.update(extra)
        return merged

    def _require_configured(self) -> None:
        if not self.resource or not self.action:
            raise ImproperlyConfigured(
                f"{type(self).__name__} needs arguments: "
                f"{type(self).__name__}('resource', 'action')"
            )

    def has_permission(self, request: Request, view: APIView) -> bool:
        self._require_configured()
        if self.object_level:
            # The policy is asked per object; here only a Keyrunes user is needed.
            return isinstance(get_identity(request), VerifiedIdentity)
        return has_permission(request, self.resource, self.action, self._context(request, view))

    def has_object_permission(self, request: Request, view: APIView, obj: Any) -> bool:
        if not self.object_level:
            return True
        self._require_configured()
        return has_permission(
            request, self.resource, self.action, self._context(request, view, obj=obj)
        )


class HasObjectPermission(HasPermission):
    """Object-level ``HasPermission``: ``HasObjectPermission("docs:{obj.pk}", "read")``."""

    object_level = True


class IsOrganization(KeyrunesPermission):
    """A caller with an organization key; ``IsOrganization(2)`` pins the organization."""

    message = "A valid organization key is required."
    organization_id: ClassVar[int | None] = None

    @classmethod
    def configure(cls, *args: Any, **kwargs: Any) -> type[KeyrunesPermission]:
        if len(args) > 1 or set(kwargs) - {"organization_id"} or (args and kwargs):
            raise TypeError("IsOrganization(organization_id)")
        value = args[0] if args else kwargs["organization_id"]
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError("IsOrganization needs an integer organization id")
        return cls._subclass(
            f"{cls.__name__}({value!r})",
            {
                "organization_id": value,
                "message": f"A valid key of organization {value} is required.",
            },
        )

    def has_permission(self, request: Request, view: APIView) -> bool:
        principal = get_identity(request)
        if not isinstance(principal, OrganizationPrincipal):
            return False
        if self.organization_id is None:
            return True
        return principal.organization_id == self.organization_id

"""DRF permission classes backed by Keyrunes groups, admin status and policies.

Each class can be configured in two ways, and both give a DRF permission
*class* (never an instance):

* the call form, ``HasGroup("editors")``: calling a class with arguments
  returns a configured **subclass** named after the call
  (``"HasGroup('editors')"``); DRF instantiates it with no arguments, as it
  does every permission class;
* DRF's own idiom, a subclass with class attributes::

      class Editors(HasGroup):
          groups = ("editors",)

Either goes into ``permission_classes`` or ``DEFAULT_PERMISSION_CLASSES``
(assign the call form to a module-level name to give it a dotted path), and
composes with DRF's ``&``, ``|`` and ``~``::

    permission_classes = [IsKeyrunesAuthenticated & (HasGroup("editors") | IsKeyrunesAdmin)]

Both forms are validated when the class is made, with a ``TypeError`` naming
the mistake. Calling a class without arguments instantiates it, as usual.

Anonymous callers are refused by every class; DRF turns that into 401 when an
authenticator could have identified them, 403 otherwise. The decisions are the
ones of :mod:`keyrunes_django.access`, shared with the decorators and mixins.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from django.core.exceptions import ImproperlyConfigured
from django.utils.functional import lazy
from django.utils.translation import gettext, gettext_lazy
from rest_framework.permissions import BasePermission, BasePermissionMetaclass
from rest_framework.request import Request

from keyrunes_django import access

if TYPE_CHECKING:
    # rest_framework.views reads DEFAULT_PERMISSION_CLASSES while it is imported,
    # so importing it here would make this module unusable in that setting.
    from django_stubs_ext import StrOrPromise
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
    """Calling a permission class *with* arguments makes a configured subclass."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        if args or kwargs:
            return cls.configure(*args, **kwargs)  # type: ignore[attr-defined]
        return super().__call__()


class KeyrunesPermission(BasePermission, metaclass=_ConfigurableMeta):
    """Base of the Keyrunes permission classes.

    A subclass declares its settings as class attributes, checks them in
    :meth:`validate_class`, and maps call arguments onto them in
    :meth:`configure_attributes`; both forms then go through the same checks.
    """

    message: ClassVar[StrOrPromise] = gettext_lazy(
        "You do not have permission to perform this action."
    )
    _derived_message: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.validate_class()
        # A refusal text somebody wrote is kept; one derived from the
        # settings follows them.
        owner = next(k for k in cls.__mro__ if "message" in k.__dict__)
        if owner is not cls and (
            owner.__module__ == __name__ or owner.__dict__.get("_derived_message", False)
        ):
            default = cls.default_message()
            if default is not None:
                cls.message = default
                cls._derived_message = True

    @classmethod
    def validate_class(cls) -> None:
        """Raise ``TypeError`` when the class attributes are unusable."""

    @classmethod
    def default_message(cls) -> str | None:
        """The refusal text for these settings (``None``: inherit the parent's)."""
        return None

    @classmethod
    def configure_attributes(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Class attributes for the call form's arguments."""
        raise TypeError(f"{cls.__name__} takes no arguments")

    @classmethod
    def configure(cls, *args: Any, **kwargs: Any) -> type[KeyrunesPermission]:
        """The call form: a subclass with the attributes the arguments name."""
        attrs = cls.configure_attributes(*args, **kwargs)
        label = f"{cls.__name__}({_args_label(args, kwargs)})"
        attrs["__module__"] = cls.__module__
        attrs["__qualname__"] = label
        metaclass: type[Any] = type(cls)
        subclass: type[KeyrunesPermission] = metaclass(label, (cls,), attrs)
        return subclass


def _args_label(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> str:
    parts = [repr(a) for a in args] + [f"{k}={v!r}" for k, v in kwargs.items()]
    return ", ".join(parts)


class IsKeyrunesAuthenticated(KeyrunesPermission):
    """A signed-in user; with ``allow_organization=True`` an organization key too."""

    message = gettext_lazy("Authentication as a Keyrunes user is required.")
    allow_organization: ClassVar[bool] = False

    @classmethod
    def validate_class(cls) -> None:
        if not isinstance(cls.allow_organization, bool):
            raise TypeError(f"{cls.__name__}.allow_organization must be True or False")

    @classmethod
    def configure_attributes(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:
        if args or set(kwargs) - {"allow_organization"}:
            raise TypeError(f"{cls.__name__} takes only allow_organization=")
        return {"allow_organization": kwargs["allow_organization"]}

    def has_permission(self, request: Request, view: APIView) -> bool:
        return access.is_authenticated(request, allow_organization=self.allow_organization)


class IsKeyrunesAdmin(KeyrunesPermission):
    """Global superadmin, tenant admin (exact group names) or a Django superuser."""

    message = access.ADMIN_REQUIRED

    def has_permission(self, request: Request, view: APIView) -> bool:
        return access.is_admin(request)


class _GroupPermission(KeyrunesPermission):
    groups: ClassVar[tuple[str, ...]] = ()
    all_groups: ClassVar[bool] = False

    @classmethod
    def validate_class(cls) -> None:
        groups: Any = cls.groups
        # A bare string (often ``("editors")`` without the comma) is refused
        # rather than read as a list of one-letter group names.
        if not isinstance(groups, (tuple, list)):
            raise TypeError(f"{cls.__name__}.groups must be a tuple of names, e.g. ('editors',)")
        if not all(isinstance(g, str) and g for g in groups):
            raise TypeError(f"{cls.__name__} needs group names (non-empty strings)")
        if not isinstance(cls.all_groups, bool):
            raise TypeError(f"{cls.__name__}.all_groups must be True or False")
        cls.groups = tuple(groups)

    @classmethod
    def default_message(cls) -> str | None:
        if not cls.groups:
            return None
        return access.groups_message(cls.groups, all_groups=cls.all_groups)

    @classmethod
    def configure_attributes(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:
        if kwargs:
            raise TypeError(f"{cls.__name__} takes group names only")
        return {"groups": args}

    def has_permission(self, request: Request, view: APIView) -> bool:
        if not self.groups:
            raise ImproperlyConfigured(
                f"{type(self).__name__} needs group names: {type(self).__name__}('a', 'b')"
            )
        return access.has_group(request, *self.groups, all_groups=self.all_groups)


class HasGroup(_GroupPermission):
    """Membership in any of the groups: ``HasGroup("editors", "admins")``."""


class HasAllGroups(_GroupPermission):
    """Membership in every one of the groups: ``HasAllGroups("staff", "auditors")``."""

    all_groups = True


class HasPermission(KeyrunesPermission):
    """A Keyrunes policy allowing ``action`` on ``resource``.

    ``{placeholders}`` in the resource are filled from the view's URL kwargs,
    ``view``, ``request`` and ``context`` (a mapping, or a callable of the
    request). With ``object_level=True`` the check runs in
    ``has_object_permission``, and the object is available as ``{obj}``:
    ``HasPermission("docs:{obj.pk}", "read", object_level=True)``. As a
    subclass: ``resource = "docs:{pk}"``, ``action = "read"``.
    """

    resource: ClassVar[str] = ""
    action: ClassVar[str] = ""
    object_level: ClassVar[bool] = False
    context: ClassVar[ContextArg] = None

    @classmethod
    def validate_class(cls) -> None:
        resource, action = cls.resource, cls.action
        if not isinstance(resource, str) or not isinstance(action, str):
            raise TypeError(f"{cls.__name__}: resource and action must be strings")
        if bool(resource) != bool(action):
            missing = "an action" if resource else "a resource"
            raise TypeError(f"{cls.__name__} needs {missing} string")
        if not isinstance(cls.object_level, bool):
            raise TypeError(f"{cls.__name__}.object_level must be True or False")
        context = cls.__dict__.get("context")
        if callable(context) and not isinstance(context, staticmethod):
            # A plain function stored on a class would turn into a method.
            cls.context = staticmethod(context)
        elif context is not None and not isinstance(context, (Mapping, staticmethod)):
            raise TypeError(f"{cls.__name__}.context must be a mapping or a callable")

    @classmethod
    def default_message(cls) -> str | None:
        if not cls.resource:
            return None
        return access.permission_message(cls.resource, cls.action)

    @classmethod
    def configure_attributes(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:
        names = ("resource", "action", "object_level", "context")
        if len(args) > 2 or set(kwargs) - set(names):
            raise TypeError(f"{cls.__name__}(resource, action, *, object_level=, context=)")
        values = dict(zip(names, args, strict=False))
        values.update(kwargs)
        for name in ("resource", "action"):
            if not isinstance(values.get(name), str) or not values[name]:
                raise TypeError(f"{cls.__name__} needs a {name} string")
        return values

    def _context(self, request: Request, view: APIView, **extra: Any) -> dict[str, Any]:
        base = dict(getattr(view, "kwargs", None) or {})
        base.update(view=view, request=request)
        merged = access.build_context(type(self).context, request, base)
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
            return access.is_keyrunes_user(request)
        return access.has_permission(
            request, self.resource, self.action, self._context(request, view)
        )

    def has_object_permission(self, request: Request, view: APIView, obj: Any) -> bool:
        if not self.object_level:
            return True
        self._require_configured()
        return access.has_permission(
            request, self.resource, self.action, self._context(request, view, obj=obj)
        )


class HasObjectPermission(HasPermission):
    """Object-level ``HasPermission``: ``HasObjectPermission("docs:{obj.pk}", "read")``."""

    object_level = True


def _organization_message(organization_id: int) -> str:
    text = gettext("A valid key of organization %(organization_id)s is required.")
    return text % {"organization_id": organization_id}


# The class's message is built once, when the class is; it is translated when shown.
_lazy_organization_message = lazy(_organization_message, str)


class IsOrganization(KeyrunesPermission):
    """A caller with an organization key; ``IsOrganization(2)`` pins the organization."""

    message = gettext_lazy("A valid organization key is required.")
    organization_id: ClassVar[int | None] = None

    @classmethod
    def validate_class(cls) -> None:
        value = cls.organization_id
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            raise TypeError(f"{cls.__name__} needs an integer organization id")

    @classmethod
    def default_message(cls) -> str | None:
        if cls.organization_id is None:
            return None
        return _lazy_organization_message(cls.organization_id)

    @classmethod
    def configure_attributes(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:
        if len(args) > 1 or set(kwargs) - {"organization_id"} or (args and kwargs):
            raise TypeError(f"{cls.__name__}(organization_id)")
        value = args[0] if args else kwargs["organization_id"]
        if value is None:
            raise TypeError(f"{cls.__name__} needs an integer organization id")
        return {"organization_id": value}

    def has_permission(self, request: Request, view: APIView) -> bool:
        return access.is_organization(request, self.organization_id)

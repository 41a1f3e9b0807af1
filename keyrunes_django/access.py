"""The access checks that decorators, mixins, DRF permissions and template tags share.

Two layers live here:

* **questions** about a request or a user, answered with a bool:
  :func:`is_authenticated`, :func:`has_group`, :func:`is_admin`,
  :func:`has_permission` (a Keyrunes policy), :func:`is_keyrunes_user`,
  :func:`is_organization`;
* **checks** built on them for views, answered with ``None`` (allowed) or a
  :class:`Refusal` (why not): :func:`check_login`, :func:`check_groups`,
  :func:`check_admin`, :func:`check_permission`; :func:`refuse` turns a
  refusal into a login redirect, a 401 answer or ``PermissionDenied``
  depending on :func:`is_api_request`.

Admin status follows the server's rules, not the SDK's: the exact group names
``superadmin`` (global only in the ``public`` namespace) and ``admin`` (own
namespace), never "any group name containing admin".

Every question accepts a request (Django or DRF) or a user. The principal is
taken, in order, from ``request.keyrunes`` (set by the middleware for bearer
tokens and organization keys), from DRF's ``request.auth``, from a
:class:`~keyrunes_django.users.StatelessUser`, and finally from the session
user's :class:`~keyrunes_django.models.KeyrunesIdentity` mirror.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.contrib.auth import REDIRECT_FIELD_NAME
from django.contrib.auth.views import redirect_to_login
from django.core.cache import caches
from django.core.exceptions import FieldError, ObjectDoesNotExist, PermissionDenied
from django.http import HttpRequest, HttpResponseBase
from django.utils.functional import lazy
from django.utils.translation import gettext, gettext_lazy

from keyrunes_django.claims import unverified_claims
from keyrunes_django.conf import keyrunes_settings
from keyrunes_django.identity import OrganizationPrincipal, VerifiedIdentity
from keyrunes_django.negotiation import is_api_request
from keyrunes_django.responses import authentication_required_response
from keyrunes_django.users import StatelessUser

if TYPE_CHECKING:
    from django_stubs_ext import StrOrPromise

__all__ = [
    "ADMIN_REQUIRED",
    "NOT_AUTHENTICATED",
    "ContextArg",
    "Principal",
    "Refusal",
    "build_context",
    "check_admin",
    "check_groups",
    "check_login",
    "check_permission",
    "get_identity",
    "get_user",
    "groups_message",
    "has_group",
    "has_permission",
    "is_admin",
    "is_api_request",
    "is_authenticated",
    "is_keyrunes_user",
    "is_organization",
    "permission_cache_key",
    "permission_message",
    "refuse",
    "refuse_anonymous",
    "resolve_resource",
]

# The logger keeps the name of the module these checks started in, which
# logging configurations already name.
logger = logging.getLogger("keyrunes_django.authorization")

Principal = VerifiedIdentity | OrganizationPrincipal

# Attribute under which a user object memoises the identity built from its
# mirror, so one request asking several questions reads the row once.
_MEMO_ATTR = "_keyrunes_identity_memo"
_CACHE_PREFIX = "keyrunes:perm:"


def _is_request(obj: Any) -> bool:
    # Django's HttpRequest and DRF's Request (which proxies to it) both carry META.
    return hasattr(obj, "META") and hasattr(obj, "method")


def get_user(request_or_user: Any) -> Any:
    """The Django user behind ``request_or_user`` (``None`` when there is none)."""
    if request_or_user is None:
        return None
    if _is_request(request_or_user):
        return getattr(request_or_user, "user", None)
    return request_or_user


def _identity_from_user(user: Any) -> VerifiedIdentity | None:
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    memo = getattr(user, _MEMO_ATTR, None)
    if isinstance(memo, VerifiedIdentity):
        return memo
    try:
        link = user.keyrunes_identity
    except (ObjectDoesNotExist, AttributeError):
        return None
    payload = link.payload if isinstance(link.payload, Mapping) else {}
    groups = _payload_groups(payload)
    if groups is None:
        groups = _mirrored_group_names(user)
    identity = VerifiedIdentity(
        user_id=int(link.remote_user_id),
        username=str(payload.get("username") or user.get_username()),
        email=str(payload.get("email") or getattr(user, "email", "") or ""),
        namespace=str(link.namespace),
        organization_id=_organization_id(link.organization_id, payload),
        groups=groups,
        external_id=str(link.external_id) if link.external_id else None,
        source="login",
        payload=dict(payload),
    )
    with contextlib.suppress(AttributeError):  # slotted user classes
        setattr(user, _MEMO_ATTR, identity)
    return identity


def _organization_id(value: Any, payload: Mapping[str, Any]) -> int:
    if value is None:
        value = payload.get("organization_id")
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _payload_groups(payload: Mapping[str, Any]) -> tuple[str, ...] | None:
    groups = payload.get("groups")
    if isinstance(groups, (list, tuple)) and all(isinstance(g, str) for g in groups):
        return tuple(groups)
    return None


def _mirrored_group_names(user: Any) -> tuple[str, ...]:
    # Fallback for mirrors written without a group list in their payload: the
    # local groups that mirror a remote one carry its remote name.
    try:
        names = user.groups.filter(keyrunes_mirror__isnull=False).values_list(
            "keyrunes_mirror__remote_name", flat=True
        )
        return tuple(sorted(str(n) for n in names))
    except (AttributeError, FieldError):
        # A custom user model without Django groups has no mirrored groups.
        logger.debug("mirrored groups unavailable for user %s", getattr(user, "pk", None))
        return ()


def get_identity(request_or_user: Any) -> Principal | None:
    """The Keyrunes principal behind a request or a user, or ``None``.

    ``None`` means anonymous, or a local-only Django user with no Keyrunes
    mirror (such a user can still be an admin through ``is_superuser``).
    """
    if request_or_user is None:
        return None
    if isinstance(request_or_user, (VerifiedIdentity, OrganizationPrincipal)):
        return request_or_user
    if _is_request(request_or_user):
        principal = getattr(request_or_user, "keyrunes", None)
        if isinstance(principal, (VerifiedIdentity, OrganizationPrincipal)):
            return principal
        # DRF: the authentication class hands the principal over as request.auth.
        auth = getattr(request_or_user, "auth", None)
        if isinstance(auth, (VerifiedIdentity, OrganizationPrincipal)):
            return auth
        return _user_principal(getattr(request_or_user, "user", None))
    return _user_principal(request_or_user)


def _user_principal(user: Any) -> Principal | None:
    if isinstance(user, StatelessUser):
        return user.identity
    # DRF's organization-key authentication puts an OrganizationUser (carrying
    # the principal) on request.user.
    if isinstance(user, OrganizationPrincipal):
        return user
    principal = getattr(user, "principal", None)
    if isinstance(principal, OrganizationPrincipal):
        return principal
    return _identity_from_user(user)


def is_authenticated(request_or_user: Any, *, allow_organization: bool = False) -> bool:
    """A signed-in user (token, session or local); an organization key only if allowed."""
    principal = get_identity(request_or_user)
    if isinstance(principal, OrganizationPrincipal):
        return allow_organization
    if principal is not None:
        return True
    user = get_user(request_or_user)
    return bool(user is not None and getattr(user, "is_authenticated", False))


def has_group(user_or_request: Any, *groups: str, all_groups: bool = False) -> bool:
    """Whether the Keyrunes user belongs to any (or, with ``all_groups``, every) group.

    Only Keyrunes groups count: token claims, or the groups recorded by the
    mirror. Organization keys and local-only users belong to no group.
    """
    if not groups:
        raise ValueError("has_group() needs at least one group name")
    identity = get_identity(user_or_request)
    if not isinstance(identity, VerifiedIdentity):
        return False
    if all_groups:
        return identity.has_all_groups(groups)
    return identity.has_any_group(groups)


def is_admin(user_or_request: Any) -> bool:
    """Global superadmin, tenant admin (exact names), or a Django superuser."""
    identity = get_identity(user_or_request)
    if isinstance(identity, OrganizationPrincipal):
        return False
    if identity is not None and identity.is_admin:
        return True
    user = get_user(user_or_request)
    return bool(
        user is not None
        and not isinstance(user, OrganizationPrincipal)
        and getattr(user, "is_active", False)
        and getattr(user, "is_superuser", False)
    )


def resolve_resource(template: str, context: Mapping[str, Any] | None) -> str:
    """Fill ``{placeholders}`` of a resource template from ``context``.

    A template without braces is returned as is (write ``{{``/``}}`` for
    literal braces). A missing key raises :class:`KeyError`, which
    :func:`has_permission` turns into a denial.
    """
    if "{" not in template and "}" not in template:
        return template
    return template.format_map(context or {})


def permission_cache_key(namespace: str, user_id: int, resource: str, action: str) -> str:
    """Cache key of one policy answer (hashed: resources may hold any character)."""
    raw = "\x00".join((namespace, str(user_id), resource, action))
    return _CACHE_PREFIX + hashlib.sha256(raw.encode()).hexdigest()


def _cache_get(key: str) -> bool | None:
    try:
        value = caches[keyrunes_settings.CACHE_ALIAS].get(key)
    except Exception as exc:
        logger.warning("permission cache unavailable: %s", exc)
        return None
    return value if isinstance(value, bool) else None


def _cache_set(key: str, value: bool, ttl: int) -> None:
    try:
        caches[keyrunes_settings.CACHE_ALIAS].set(key, value, ttl)
    except Exception as exc:
        logger.warning("permission cache unavailable: %s", exc)


def _ask_server(identity: VerifiedIdentity, resource: str, action: str) -> bool:
    from keyrunes_django.client import get_client

    client = get_client()
    org_key = keyrunes_settings.ORGANIZATION_KEY
    if org_key:
        answer = client.check_permission(identity.user_id, resource, action, org_key=org_key)
        allowed: Any = answer.allowed
    else:
        from keyrunes_django.service_account import get_service_token

        token = get_service_token()
        # The admin route evaluates in the service account's own namespace,
        # where this user id may belong to somebody else.
        token_namespace = _token_namespace(token)
        if token_namespace is not None and token_namespace != identity.namespace:
            raise _Denied(
                f"the service account's namespace {token_namespace!r} is not the "
                f"user's namespace {identity.namespace!r}"
            )
        check = client.admin_check_permission(token, identity.user_id, resource, action)
        allowed = check.has_permission
    if not isinstance(allowed, bool):
        raise _Denied(f"the server answered a non-boolean decision {allowed!r}")
    return allowed


def _token_namespace(token: str) -> str | None:
    # Our own service token: its claims only choose where the question is asked.
    namespace = unverified_claims(token).get("namespace")
    return namespace if isinstance(namespace, str) else None


class _Denied(Exception):
    """A reason to deny that is not an error of the server."""


def _outside_service_namespace(identity: VerifiedIdentity) -> bool:
    service_namespace = keyrunes_settings.NAMESPACE
    if service_namespace and identity.namespace != service_namespace:
        logger.warning(
            "permission denied for user %s: namespace %r is not the service's %r",
            identity.user_id,
            identity.namespace,
            service_namespace,
        )
        return True
    return False


def _server_answer(identity: VerifiedIdentity, resource: str, action: str) -> bool | None:
    """The server's answer, or ``None`` (the reason logged) when there is none to trust."""
    try:
        return _ask_server(identity, resource, action)
    except _Denied as exc:
        logger.warning(
            "permission denied for user %s on %s/%s: %s", identity.user_id, resource, action, exc
        )
    except Exception as exc:
        logger.warning(
            "permission denied for user %s on %s/%s: policy check failed: %s: %s",
            identity.user_id,
            resource,
            action,
            type(exc).__name__,
            exc,
        )
    return None


def has_permission(
    user_or_request: Any,
    resource: str,
    action: str,
    context: Mapping[str, Any] | None = None,
) -> bool:
    """Ask Keyrunes whether the user may do ``action`` on ``resource``.

    Uses ``POST /api/check-permission`` with the service's organization key,
    or ``POST /api/admin/check-permission`` with the service account when no
    key is configured. ``context`` fills ``{placeholders}`` in ``resource``.
    Answers are cached for ``PERMISSION_CACHE_TTL`` seconds per (namespace,
    user, resource, action); failures are not cached. Any failure denies, and
    the reason is logged.
    """
    identity = get_identity(user_or_request)
    if isinstance(identity, OrganizationPrincipal):
        logger.info("permission denied: organization keys have no user policies")
        return False
    if identity is None:
        logger.debug("permission denied: no Keyrunes user")
        return False
    try:
        resource = resolve_resource(resource, context)
    except (KeyError, IndexError, AttributeError, ValueError) as exc:
        logger.warning("permission denied: resource %r cannot be filled: %r", resource, exc)
        return False
    if _outside_service_namespace(identity):
        return False
    ttl = int(keyrunes_settings.PERMISSION_CACHE_TTL or 0)
    key = permission_cache_key(identity.namespace, identity.user_id, resource, action)
    if ttl > 0:
        cached = _cache_get(key)
        if cached is not None:
            return cached
    allowed = _server_answer(identity, resource, action)
    if allowed is None:
        return False
    if ttl > 0:
        _cache_set(key, allowed, ttl)
    if not allowed:
        logger.info(
            "permission denied by policy for user %s on %s/%s", identity.user_id, resource, action
        )
    return allowed


def is_keyrunes_user(request_or_user: Any) -> bool:
    """Whether the caller is a Keyrunes user (token, session mirror or stateless user)."""
    return isinstance(get_identity(request_or_user), VerifiedIdentity)


def is_organization(request_or_user: Any, organization_id: int | None = None) -> bool:
    """Whether the caller is an organization key (of ``organization_id`` when given)."""
    principal = get_identity(request_or_user)
    if not isinstance(principal, OrganizationPrincipal):
        return False
    return organization_id is None or principal.organization_id == organization_id


# ------------------------------------------------------------------ refusals

NOT_AUTHENTICATED = gettext_lazy("Authentication credentials were not provided.")

#: Extra placeholders for a resource template: a mapping, or a callable of the
#: request returning one.
ContextArg = Mapping[str, Any] | Callable[[Any], Mapping[str, Any]] | None


@dataclass(frozen=True)
class Refusal:
    """Why a check refused: ``anonymous`` callers may log in, the others may not."""

    anonymous: bool
    message: StrOrPromise


def refuse_anonymous(request: Any) -> Refusal | None:
    """Refuse a caller nobody identified (an organization key counts as identified)."""
    if is_authenticated(request, allow_organization=True):
        return None
    return Refusal(True, NOT_AUTHENTICATED)


def check_login(request: Any, *, allow_organization: bool = False) -> Refusal | None:
    """A signed-in user; an organization key only with ``allow_organization``."""
    if is_authenticated(request, allow_organization=allow_organization):
        return None
    if isinstance(get_identity(request), OrganizationPrincipal):
        return Refusal(
            False, gettext("Organization keys are not accepted here; sign in as a user.")
        )
    return Refusal(True, NOT_AUTHENTICATED)


def check_groups(
    request: Any, groups: tuple[str, ...], *, all_groups: bool = False
) -> Refusal | None:
    """Membership in any of ``groups`` (every one with ``all_groups``)."""
    refusal = refuse_anonymous(request)
    if refusal is not None:
        return refusal
    if has_group(request, *groups, all_groups=all_groups):
        return None
    return Refusal(False, groups_message(groups, all_groups=all_groups))


def _groups_text(groups: tuple[str, ...], all_groups: bool) -> str:
    if all_groups:
        text = gettext("Membership in all of the groups %(groups)s is required.")
    else:
        text = gettext("Membership in one of the groups %(groups)s is required.")
    return text % {"groups": ", ".join(groups)}


# Refusal texts may be built at import time (a DRF permission's message): lazy,
# they are worded in the language active when shown.
_lazy_groups_text = lazy(_groups_text, str)


def groups_message(groups: tuple[str, ...], *, all_groups: bool = False) -> str:
    """The refusal text of a group check (lazy: in the language active when shown)."""
    return _lazy_groups_text(tuple(groups), all_groups)


ADMIN_REQUIRED = gettext_lazy("Keyrunes administrator access is required.")


def check_admin(request: Any) -> Refusal | None:
    """A Keyrunes admin or a Django superuser."""
    refusal = refuse_anonymous(request)
    if refusal is not None:
        return refusal
    if is_admin(request):
        return None
    return Refusal(False, ADMIN_REQUIRED)


def _permission_text(resource: str, action: str) -> str:
    text = gettext("Permission %(action)s on %(resource)s is required.")
    return text % {"action": repr(action), "resource": repr(resource)}


_lazy_permission_text = lazy(_permission_text, str)


def permission_message(resource: str, action: str) -> str:
    """The refusal text of a policy check (lazy: in the language active when shown)."""
    return _lazy_permission_text(resource, action)


def check_permission(
    request: Any, resource: str, action: str, context: Mapping[str, Any] | None = None
) -> Refusal | None:
    """A Keyrunes policy allowing ``action`` on ``resource`` (placeholders from ``context``)."""
    refusal = refuse_anonymous(request)
    if refusal is not None:
        return refusal
    if has_permission(request, resource, action, context):
        return None
    return Refusal(False, permission_message(resource, action))


def build_context(
    context: ContextArg, request: Any, view_kwargs: Mapping[str, Any]
) -> dict[str, Any]:
    """``view_kwargs`` overlaid with ``context`` (a mapping, or a callable of the request)."""
    merged: dict[str, Any] = dict(view_kwargs)
    if callable(context):
        merged.update(context(request))
    elif context:
        merged.update(context)
    return merged


def refuse(
    request: HttpRequest,
    refusal: Refusal,
    *,
    raise_exception: bool = False,
    login_url: str | None = None,
    redirect_field_name: str = REDIRECT_FIELD_NAME,
) -> HttpResponseBase:
    """Turn a refusal into a login redirect, a 401 answer, or ``PermissionDenied``.

    Anonymous callers get a redirect (browsers) or 401 (API clients, see
    :func:`is_api_request`); everything else, and every refusal with
    ``raise_exception``, raises ``PermissionDenied``.
    """
    if refusal.anonymous and not raise_exception:
        if is_api_request(request):
            return authentication_required_response(request, description=refusal.message)
        return redirect_to_login(request.get_full_path(), login_url, redirect_field_name)
    raise PermissionDenied(refusal.message)

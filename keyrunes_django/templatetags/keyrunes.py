"""Template filters and tags for Keyrunes group, admin and policy checks.

::

    {% load keyrunes %}
    {% if user|in_keyrunes_group:"editors" %}...{% endif %}
    {% if request|is_keyrunes_admin %}...{% endif %}
    {% keyrunes_has_group "editors" "writers" as can_edit %}
    {% keyrunes_has_group "staff" "auditors" all=True as is_auditor %}
    {% keyrunes_can "docs:{id}" "read" id=doc.pk as can_read %}

The filters take a user or a request. The tags check the template's
``request`` (so bearer tokens and organization keys count), or its ``user``
when the context has no request. Every answer is the one the decorators, mixins
and DRF permissions give (:mod:`keyrunes_django.access`).

``keyrunes_can`` asks Keyrunes at most once per distinct question (caller,
resource, action) per request, whatever ``PERMISSION_CACHE_TTL`` says: a page
that lists a hundred rows with the same check makes one remote call.
"""

from __future__ import annotations

from typing import Any

from django import template

from keyrunes_django import access
from keyrunes_django.identity import VerifiedIdentity

register = template.Library()

# Attribute of the request that holds its policy answers:
# {(namespace, user id, resource, action): allowed}.
_ANSWERS_ATTR = "_keyrunes_policy_answers"


@register.filter
def in_keyrunes_group(user_or_request: Any, group: Any) -> bool:
    """``user|in_keyrunes_group:"editors"``: a member of that Keyrunes group."""
    if not isinstance(group, str) or not group:
        return False
    return access.has_group(user_or_request, group)


@register.filter
def is_keyrunes_admin(user_or_request: Any) -> bool:
    """``user|is_keyrunes_admin``: a Keyrunes admin or a Django superuser."""
    return access.is_admin(user_or_request)


def _subject(context: template.Context) -> Any:
    request = context.get("request")
    return request if request is not None else context.get("user")


@register.simple_tag(takes_context=True)
def keyrunes_has_group(
    context: template.Context,
    *groups: Any,
    all: bool = False,  # the template keyword: all=True
) -> bool:
    """Membership in any of ``groups`` (every one with ``all=True``)."""
    names = tuple(g for g in groups if isinstance(g, str) and g)
    if not names or len(names) != len(groups):
        return False
    return access.has_group(_subject(context), *names, all_groups=bool(all))


@register.simple_tag(takes_context=True)
def keyrunes_can(
    context: template.Context, resource: Any, action: Any, **placeholders: Any
) -> bool:
    """A Keyrunes policy allows ``action`` on ``resource`` (``{name}`` filled from keywords)."""
    if not isinstance(resource, str) or not isinstance(action, str) or not resource or not action:
        return False
    subject = _subject(context)
    identity = access.get_identity(subject)
    request = context.get("request")
    if request is None or not isinstance(identity, VerifiedIdentity):
        return access.has_permission(subject, resource, action, placeholders)
    try:
        resolved = access.resolve_resource(resource, placeholders)
    except Exception:
        # has_permission denies a template it cannot fill, and logs why.
        return access.has_permission(subject, resource, action, placeholders)
    answers: dict[tuple[str, int, str, str], bool] = getattr(request, _ANSWERS_ATTR, None) or {}
    key = (identity.namespace, identity.user_id, resolved, action)
    if key not in answers:
        answers[key] = access.has_permission(subject, resource, action, placeholders)
        setattr(request, _ANSWERS_ATTR, answers)
    return answers[key]

"""The one rule that tells an API client from a browser.

Two places ask it: the access checks (an anonymous API client gets a 401
answer, a browser a login redirect) and :mod:`keyrunes_django.responses`
(JSON body or plain text). It lives here, apart from both, because each of
them imports the other's neighbours.
"""

from __future__ import annotations

from typing import Any

from keyrunes_django.conf import keyrunes_settings

__all__ = ["is_api_request"]


def _accept_preference(accept: str) -> bool | None:
    """``True``/``False`` when ``Accept`` names JSON or HTML, ``None`` when it names neither."""
    types = {part.split(";", 1)[0].strip() for part in accept.lower().split(",")}
    if "text/html" in types or "application/xhtml+xml" in types:
        return False
    if any("json" in media_type for media_type in types):
        return True
    return None


def is_api_request(request: Any) -> bool:
    """Whether the caller is an API client rather than a browser.

    In order:

    1. an XHR (``X-Requested-With: XMLHttpRequest``), or a path that starts
       with one of ``KEYRUNES["API_PATH_PREFIXES"]`` (default ``/api/``), is
       an API client's;
    2. an ``Accept`` header that names HTML is a browser's, one that names
       JSON (``application/json``, ``application/problem+json``...) an API
       client's;
    3. otherwise (no ``Accept``, only wildcards or other types) a request that
       carries ``Authorization`` or ``X-Organization-Key`` is an API
       client's; anything else is a browser's.
    """
    meta = request.META
    if meta.get("HTTP_X_REQUESTED_WITH") == "XMLHttpRequest" or _under_api_prefix(request):
        return True
    preference = _accept_preference(str(meta.get("HTTP_ACCEPT", "")))
    if preference is not None:
        return preference
    return bool(meta.get("HTTP_AUTHORIZATION") or meta.get("HTTP_X_ORGANIZATION_KEY"))


def _under_api_prefix(request: Any) -> bool:
    prefixes = keyrunes_settings.API_PATH_PREFIXES or ()
    if isinstance(prefixes, str):
        prefixes = (prefixes,)
    path = str(getattr(request, "path", ""))
    # Empty or non-string entries are skipped (check E081 reports them).
    return any(isinstance(p, str) and p and path.startswith(p) for p in prefixes)

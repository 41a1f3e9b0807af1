"""The same trivial DRF view behind each authentication scheme compared."""

from __future__ import annotations

import os
from typing import Any

from django.http import HttpRequest, JsonResponse
from mozilla_django_oidc.contrib.drf import OIDCAuthentication
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework_simplejwt.authentication import JWTAuthentication

from keyrunes_django.drf.authentication import KeyrunesTokenAuthentication


class OpenView(APIView):
    """No authentication at all: the baseline every ratio is taken against."""

    authentication_classes: list[Any] = []
    permission_classes: list[Any] = []

    def get(self, request: Request) -> Response:
        user = request.user
        return Response({"ok": True, "user": user.get_username() if user else None})


class KeyrunesView(OpenView):
    authentication_classes = [KeyrunesTokenAuthentication]
    permission_classes = [IsAuthenticated]


class SimpleJWTView(OpenView):
    authentication_classes = [JWTAuthentication]
    permission_classes = [IsAuthenticated]


class OIDCView(OpenView):
    authentication_classes = [OIDCAuthentication]
    permission_classes = [IsAuthenticated]


def _rss() -> int:
    with open(f"/proc/{os.getpid()}/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def stats(request: HttpRequest) -> JsonResponse:
    """What this worker holds: pid, RSS, per-process cache sizes, breaker state.

    With ``?tokens=1`` also the hashes of the tokens it remembers.
    """
    from keyrunes_django.breaker import get_breaker
    from keyrunes_django.tokens import get_authenticator

    auth = get_authenticator()
    out: dict[str, Any] = {
        "pid": os.getpid(),
        "rss": _rss(),
        "verification_entries": len(auth.cache.local),
        "user_entries": len(auth.users),
        "breaker": str(get_breaker().state),
    }
    if request.GET.get("tokens"):
        held = auth.users.keys()
        out["tokens"] = [str(key) for key in held]
    return JsonResponse(out)

"""drf-spectacular security schemes for the Keyrunes DRF authentication classes.

Imported by the app's ``ready()`` when drf-spectacular is installed, which
registers the extensions; nothing to configure. The generated schema gets::

    components:
      securitySchemes:
        keyrunesBearer:          {type: http, scheme: bearer, bearerFormat: JWT}
        keyrunesOrganizationKey: {type: apiKey, in: header, name: X-Organization-Key}

and each operation lists the schemes of its ``authentication_classes`` as
alternatives.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension

__all__ = [
    "BEARER_SCHEME_NAME",
    "ORGANIZATION_KEY_SCHEME_NAME",
    "KeyrunesOrganizationKeyScheme",
    "KeyrunesTokenScheme",
]

BEARER_SCHEME_NAME = "keyrunesBearer"
ORGANIZATION_KEY_SCHEME_NAME = "keyrunesOrganizationKey"


class KeyrunesTokenScheme(OpenApiAuthenticationExtension):  # type: ignore[no-untyped-call]
    """``Authorization: Bearer <Keyrunes JWT>``."""

    # A dotted path: the authentication module is imported only when a schema is built.
    target_class = "keyrunes_django.drf.authentication.KeyrunesTokenAuthentication"
    match_subclasses = True
    name = BEARER_SCHEME_NAME

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": "A Keyrunes access token (HS256 JWT) from POST /api/login.",
        }


class KeyrunesOrganizationKeyScheme(OpenApiAuthenticationExtension):  # type: ignore[no-untyped-call]
    """``X-Organization-Key: <uuid>``."""

    target_class = "keyrunes_django.drf.authentication.KeyrunesOrganizationKeyAuthentication"
    match_subclasses = True
    name = ORGANIZATION_KEY_SCHEME_NAME

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {
            "type": "apiKey",
            "in": "header",
            "name": "X-Organization-Key",
            "description": "A Keyrunes organization key (a UUID).",
        }

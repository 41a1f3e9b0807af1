"""The Keyrunes HTTP API as a WSGI application.

Routes, gates, request validation, status codes and body shapes follow the
server's source (Keyrunes 0.2.0, commit 8421401: axum 0.8, serde, josekit,
PostgreSQL). With ``server_quirks`` off it behaves as the server evidently
intends; with it on it reproduces the server's observable defects (expired
tokens accepted, ``/api/verify-org-key`` answering 500, policy checks failing
in tenant namespaces).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import re
import socket
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from werkzeug.wrappers import Request, Response

from keyrunes_django.testing.faults import Fault, FaultInjector, RequestLog
from keyrunes_django.testing.serde import (
    EMAIL_RE,
    MIN_PASSWORD_LENGTH,
    BodyError,
    ParseIntError,
    QueryError,
    parse_i64,
    read_query_org_id,
    read_struct,
)
from keyrunes_django.testing.state import (
    DEFAULT_NAMESPACE,
    DEFAULT_ORGANIZATION_ID,
    EmulatorError,
    Namespace,
    OrganizationRecord,
    State,
    UserRecord,
    check_text,
    collation_key,
    temporary_password,
    verify_password,
)

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

__all__ = ["DEFAULT_JWT_SECRET", "TOKEN_LIFETIME", "KeyrunesApp", "Reply", "encode_jwt"]

#: What the server signs with when ``JWT_SECRET`` is unset.
DEFAULT_JWT_SECRET = "your-super-secret-jwt-key-change-in-production"
TOKEN_LIFETIME = 3600
ISSUER = "keyrunes"
SERVER_VERSION = "0.1.0"
MAX_BODY = 2 * 1024 * 1024
#: josekit writes ``typ`` (set by the server) before ``alg`` (set when signing):
#: ``src/services/jwt_service.rs:63-66``.
_JWT_HEADER = b'{"typ":"JWT","alg":"HS256"}'
_TENANT_POLICY_ERROR = 'error returned from database: relation "user_policies" does not exist'
_MISSING_RELATION = 'error returned from database: relation "users" does not exist'
_VERIFY_ORG_KEY_DEFECT = (
    "Missing request extension: Extension of type "
    "`keyrunes::domain::organization::Organization` was not found. "
    "Perhaps you forgot to add it? See `axum::Extension`."
)
#: The claims ``verify_token`` reads, in its order, and the JSON type each needs
#: (``src/services/jwt_service.rs:71-129``).
_CLAIMS = (
    ("sub", "str"),
    ("email", "str"),
    ("username", "str"),
    ("groups", "strlist"),
    ("namespace", "str"),
    ("organization_id", "i64"),
    ("exp", "i64"),
    ("iat", "i64"),
    ("iss", "str"),
)
_UUID_HEX = re.compile(r"[0-9a-fA-F]{32}")
_UUID_HYPHENATED = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)


class Reply(Exception):
    """Ends a request early with a ready response."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status)
        self.response = response


class TokenError(Exception):
    """A token the server refuses; the text is what ``verify_token`` reports."""


@dataclass
class Auth:
    """Who passed the gate: a verified token's claims, or an organization key."""

    claims: dict[str, Any] | None = None
    organization: OrganizationRecord | None = None

    @property
    def token(self) -> dict[str, Any]:
        assert self.claims is not None
        return self.claims

    @property
    def groups(self) -> list[str]:
        return list(self.token["groups"])

    @property
    def namespace(self) -> str:
        return str(self.token["namespace"])

    @property
    def user_id(self) -> int:
        """``claims.sub.parse().unwrap_or(0)`` (``src/handler/auth.rs:33``)."""
        try:
            return parse_i64(str(self.token["sub"]))
        except ParseIntError:
            return 0


# -- response helpers -------------------------------------------------------


def _json_text(data: Any) -> str:
    """serde_json's compact output: no spaces, non-ASCII left as is."""
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


def json_response(data: Any, status: int = 200) -> Response:
    return Response(_json_text(data), status, mimetype="application/json")


def error_a(status: int, message: str) -> Response:
    """Shape A: the server's ErrorResponse."""
    return json_response(
        {"error": HTTPStatus(status).phrase, "message": message, "status_code": status}, status
    )


def plain(status: int, text: str) -> Response:
    """Shape B/D: plain text."""
    return Response(text, status, content_type="text/plain; charset=utf-8")


def error_c(status: int, text: str) -> Response:
    """Shape C: ``{"error": text}``."""
    return json_response({"error": text}, status)


def empty(status: int, headers: dict[str, str] | None = None) -> Response:
    """An empty answer without ``Content-Type`` (axum sends none for ``()``)."""
    response = Response(b"", status, headers=headers)
    del response.headers["Content-Type"]
    return response


def _b64url_decode(part: str) -> bytes:
    """base64url without padding, as josekit reads it (padding is refused)."""
    if "=" in part or not re.fullmatch(r"[A-Za-z0-9_-]*", part) or len(part) % 4 == 1:
        raise TokenError("Failed to decode JWT: Invalid JWT format: invalid base64url part")
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def encode_jwt(payload: dict[str, Any], secret: str) -> str:
    """HS256 compact JWS with the server's header bytes and the payload's key order."""
    signing_input = f"{_b64url(_JWT_HEADER)}.{_b64url(_json_text(payload).encode())}"
    signature = hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64url(signature)}"


def parse_uuid(text: str) -> uuid.UUID | None:
    """``Uuid::parse_str`` (uuid 1.x): simple, hyphenated, ``{braced}`` or ``urn:uuid:`` only."""
    if len(text) == 32 and _UUID_HEX.fullmatch(text):
        return uuid.UUID(hex=text)
    if len(text) == 38 and text[0] == "{" and text[-1] == "}":
        text = text[1:-1]
    elif len(text) == 45 and text.startswith("urn:uuid:"):
        text = text[9:]
    if len(text) == 36 and _UUID_HYPHENATED.fullmatch(text):
        return uuid.UUID(text)
    return None


def _visible_ascii(value: str) -> bool:
    """``HeaderValue::to_str``: visible ASCII and tab only."""
    return all(31 < ord(ch) < 127 or ch == "\t" for ch in value)


def _raw_path(environ: WSGIEnvironment) -> str:
    """The path as sent (percent-encoded): axum routes on it, Werkzeug would decode it."""
    uri = environ.get("REQUEST_URI") or environ.get("RAW_URI")
    if not uri:
        return str(environ.get("PATH_INFO", "")) or "/"
    if not uri.startswith("/"):
        uri = urlsplit(uri).path or "/"
    return uri.split("?", 1)[0]


# -- routing ---------------------------------------------------------------

Handler = Callable[..., Response]

# (path, method, gate, handler name), in the order the server registers them
# (``src/main.rs:123-253``). Gates: none, bearer, admin, orgkey.
ROUTES: tuple[tuple[str, str, str, str], ...] = (
    ("/api/health", "GET", "none", "health"),
    ("/api/health/ready", "GET", "none", "health_ready"),
    ("/api/health/live", "GET", "none", "health_live"),
    ("/api/register", "POST", "none", "register"),
    ("/api/login", "POST", "none", "login"),
    ("/api/forgot-password", "POST", "none", "forgot_password"),
    ("/api/reset-password", "POST", "none", "reset_password"),
    ("/api/admin/organizations", "GET", "bearer", "list_organizations"),
    ("/api/refresh-token", "POST", "bearer", "refresh_token"),
    ("/api/me", "GET", "bearer", "me"),
    ("/api/user/profile", "PATCH", "bearer", "update_profile"),
    ("/api/user/change-password", "POST", "bearer", "change_password"),
    ("/api/org/secret", "GET", "bearer", "org_secret"),
    ("/api/org/secret/rotate", "POST", "bearer", "rotate_org_secret"),
    ("/api/admin/dashboard", "GET", "admin", "dashboard"),
    ("/api/admin/users", "GET", "admin", "list_users"),
    ("/api/admin/users/<user_id>", "DELETE", "admin", "delete_user"),
    ("/api/admin/users/<user_id>", "PATCH", "admin", "update_user"),
    ("/api/admin/users/<user_id>/reset-password", "POST", "admin", "admin_reset_password"),
    ("/api/admin/users/<user_id>/send-reset", "POST", "admin", "send_reset"),
    ("/api/admin/user", "POST", "admin", "create_user"),
    ("/api/admin/groups", "GET", "admin", "list_groups"),
    ("/api/admin/groups", "POST", "admin", "create_group"),
    ("/api/admin/policies", "GET", "admin", "list_policies"),
    ("/api/admin/policies", "POST", "admin", "create_policy"),
    ("/api/admin/users/<user_id>/groups/<group_id>", "POST", "admin", "assign_group"),
    ("/api/admin/users/<user_id>/groups/<group_id>", "DELETE", "admin", "remove_group"),
    ("/api/admin/check-permission", "POST", "admin", "admin_check_permission"),
    ("/api/admin/organizations", "POST", "admin", "create_organization"),
    ("/api/admin/organizations/<org_id>", "DELETE", "admin", "delete_organization"),
    ("/api/admin/organizations/<org_id>/rotate-key", "POST", "admin", "rotate_organization_key"),
    ("/api/verify-org-key", "GET", "orgkey", "verify_org_key"),
    ("/api/check-permission", "POST", "orgkey", "check_permission"),
    ("/api-docs/openapi.json", "GET", "none", "openapi"),
)


@dataclass
class _Route:
    """One path's method router, as axum builds it."""

    rule: str
    segments: tuple[str, ...]
    methods: dict[str, tuple[str, str]] = field(default_factory=dict)
    allow: list[str] = field(default_factory=list)
    #: The gate around the 405 fallback: a router-level layer wraps it too, and
    #: when two routers share a path the later router's fallback is kept
    #: (axum 0.8 ``routing/method_routing.rs`` ``Fallback::merge``).
    fallback_gate: str = "none"

    def match(self, parts: list[str]) -> dict[str, str] | None:
        if len(parts) != len(self.segments):
            return None
        args: dict[str, str] = {}
        for pattern, part in zip(self.segments, parts, strict=True):
            if pattern.startswith("<"):
                if not part:
                    return None
                args[pattern[1:-1]] = unquote(part, errors="replace")
            elif pattern != part:
                return None
        return args


def _build_routes() -> list[_Route]:
    routes: dict[str, _Route] = {}
    for path, method, gate, name in ROUTES:
        route = routes.setdefault(path, _Route(path, tuple(path.split("/"))))
        route.methods[method] = (gate, name)
        route.allow += ["GET", "HEAD"] if method == "GET" else [method]
        route.fallback_gate = gate
    return list(routes.values())


_ROUTE_TABLE = _build_routes()


class KeyrunesApp:
    """WSGI callable. ``state`` and ``server_quirks`` may be swapped at any time."""

    def __init__(
        self,
        state: State,
        *,
        jwt_secret: str = DEFAULT_JWT_SECRET,
        server_quirks: bool = False,
        faults: FaultInjector | None = None,
        request_log: RequestLog | None = None,
    ) -> None:
        self.state = state
        self.jwt_secret = jwt_secret
        self.server_quirks = server_quirks
        self.faults = faults if faults is not None else FaultInjector()
        self.request_log = request_log if request_log is not None else RequestLog()
        self.started_at = time.monotonic()

    # -- WSGI --------------------------------------------------------------

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        request = Request(environ)
        response = self.dispatch(request)
        return response(environ, start_response)

    @staticmethod
    def _route(request: Request) -> tuple[_Route | None, dict[str, str]]:
        parts = _raw_path(request.environ).split("/")
        for route in _ROUTE_TABLE:
            args = route.match(parts)
            if args is not None:
                return route, args
        return None, {}

    def dispatch(self, request: Request) -> Response:
        route, args = self._route(request)
        self.request_log.record(request.method, request.path, route.rule if route else None)
        fault = self.faults.take(request.method, request.path)
        if fault is not None:
            injected = self._apply_fault(fault, request)
            if injected is not None:
                return injected
        if route is None:
            return self._not_found(request)
        method = "GET" if request.method == "HEAD" else request.method
        try:
            if method not in route.methods:
                self._gate(route.fallback_gate, request)
                return empty(405, {"Allow": ",".join(route.allow)})
            gate, name = route.methods[method]
            handler: Handler = getattr(self, f"h_{name}")
            auth = self._gate(gate, request)
            return handler(request, auth, **args)
        except Reply as reply:
            return reply.response

    def _apply_fault(self, fault: Fault, request: Request) -> Response | None:
        if fault.delay:
            time.sleep(fault.delay)
        if fault.drop:
            sock = request.environ.get("werkzeug.socket")
            if isinstance(sock, socket.socket):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            # werkzeug treats a ConnectionError as a dropped connection and stays quiet.
            raise ConnectionAbortedError("connection dropped by an injected fault")
        if fault.malformed:
            return Response(
                b'{"user": {"user_id": 1, "email": "trunc',
                fault.status or 200,
                mimetype="application/json",
            )
        if fault.status is not None:
            return error_a(fault.status, "Injected fault")
        return None

    def _not_found(self, request: Request) -> Response:
        """``handler_404`` (``src/handler/errors.rs``): JSON for ``/api/`` or a JSON Accept."""
        accept = request.headers.get("Accept", "")
        path = _raw_path(request.environ)
        if path.startswith("/api/") or "application/json" in accept or "*/json" in accept:
            return error_a(404, "The requested resource was not found")
        return Response(
            "<!DOCTYPE html><html><head><title>404 Not Found</title></head>"
            "<body><h1>404</h1><p>Page not found.</p></body></html>",
            404,
            mimetype="text/html",
        )

    # -- tokens ------------------------------------------------------------

    def sign(
        self,
        claims: dict[str, Any],
        *,
        lifetime: int = TOKEN_LIFETIME,
        issued_at: int | None = None,
    ) -> str:
        """HS256 compact JWS with the server's header and claim order."""
        iat = int(time.time()) if issued_at is None else issued_at
        payload = {
            "sub": claims["sub"],
            "email": claims["email"],
            "username": claims["username"],
            "groups": claims["groups"],
            "namespace": claims["namespace"],
            "organization_id": claims["organization_id"],
            "exp": iat + lifetime,
            "iat": iat,
            "iss": ISSUER,
        }
        return encode_jwt(payload, self.jwt_secret)

    def token_for(self, ns: Namespace, user: UserRecord) -> str:
        return self.sign(
            {
                "sub": str(user.user_id),
                "email": user.email,
                "username": user.username,
                "groups": ns.group_names(user.user_id),
                "namespace": ns.name,
                "organization_id": user.organization_id,
            }
        )

    def decode(self, token: str) -> dict[str, Any]:
        """``verify_token``: signature and ``alg`` (josekit), then each claim's type.

        Expiry is checked too unless ``server_quirks`` is on (the server never checks it).
        """
        payload = self._verified_payload(token)
        for name, kind in _CLAIMS:
            value = payload.get(name)
            if kind == "str":
                ok = isinstance(value, str)
            elif kind == "strlist":
                ok = isinstance(value, list) and all(isinstance(g, str) for g in value)
            else:
                ok = (
                    isinstance(value, int)
                    and not isinstance(value, bool)
                    and -(2**63) <= value < 2**63
                )
            if not ok:
                raise TokenError(f"Missing or invalid '{name}' claim")
        if not self.server_quirks and payload["exp"] <= time.time():
            raise TokenError("token expired")
        return payload

    def _verified_payload(self, token: str) -> dict[str, Any]:
        parts = token.split(".")
        if len(parts) != 3:
            raise TokenError("Failed to decode JWT: Invalid JWT format: not three parts")
        header_part, payload_part, signature_part = parts
        try:
            header = json.loads(_b64url_decode(header_part))
            payload = json.loads(_b64url_decode(payload_part))
        except (ValueError, UnicodeDecodeError):
            raise TokenError("Failed to decode JWT: Invalid JWT format") from None
        if not isinstance(header, dict) or header.get("alg") != "HS256" or "crit" in header:
            raise TokenError("Failed to decode JWT: Invalid JWS header")
        expected = hmac.new(
            self.jwt_secret.encode(), f"{header_part}.{payload_part}".encode(), hashlib.sha256
        ).digest()
        if not hmac.compare_digest(expected, _b64url_decode(signature_part)):
            raise TokenError("Failed to decode JWT: Invalid signature")
        if not isinstance(payload, dict):
            raise TokenError("Failed to decode JWT: Invalid JWT payload")
        return payload

    # -- gates -------------------------------------------------------------

    @staticmethod
    def _token(request: Request) -> str | None:
        """``extract_bearer_token`` (``src/handler/auth.rs:194-218``).

        ``Bearer <token>`` (case-sensitive); else the first non-empty
        ``jwt_token=`` pair of the first Cookie header, value taken verbatim
        (quotes included).
        """
        header = request.headers.get("Authorization")
        if (
            header is not None
            and _visible_ascii(header)
            and header.startswith("Bearer ")
            and len(header) > 7
        ):
            return header[7:]
        cookie = request.environ.get("HTTP_COOKIE")
        if isinstance(cookie, str) and _visible_ascii(cookie):
            for pair in cookie.split(";"):
                value = pair.strip(" \t\r\n")
                if value.startswith("jwt_token=") and len(value) > len("jwt_token="):
                    return value[len("jwt_token=") :]
        return None

    def _bearer(self, request: Request) -> dict[str, Any]:
        token = self._token(request)
        if token is None:
            raise Reply(error_a(401, "Missing authorization header"))
        try:
            return self.decode(token)
        except TokenError:
            raise Reply(error_a(401, "Invalid or expired token")) from None

    def _gate(self, gate: str, request: Request) -> Auth:
        if gate == "none":
            return Auth()
        if gate == "bearer":
            return Auth(claims=self._bearer(request))
        if gate == "admin":
            claims = self._bearer(request)
            if not {"superadmin", "admin"} & set(claims["groups"]):
                raise Reply(error_a(403, "Superadmin or Admin access required"))
            return Auth(claims=claims)
        assert gate == "orgkey"
        return self._org_key_gate(request)

    def _org_key_gate(self, request: Request) -> Auth:
        """``require_org_key_or_superadmin`` (``src/handler/auth.rs:139-191``)."""
        key = request.headers.get("X-Organization-Key")
        if key is not None:
            if not _visible_ascii(key):
                raise Reply(error_a(401, "Invalid API Key format"))
            parsed = parse_uuid(key)
            if parsed is None:
                raise Reply(error_a(401, "Invalid API Key format (must be UUID)"))
            org = self.state.organization_by_key(parsed)
            if org is None:
                raise Reply(error_a(401, "Invalid API Key"))
            return Auth(organization=org)
        token = self._token(request)
        if token is not None:
            with contextlib.suppress(TokenError):
                claims = self.decode(token)
                if "superadmin" in claims["groups"]:
                    return Auth(claims=claims)
        raise Reply(error_a(401, "Missing X-Organization-Key header or valid Superadmin token"))

    # -- extractors --------------------------------------------------------

    @staticmethod
    def _body(request: Request) -> bytes:
        """axum's ``Json`` preconditions: a JSON ``Content-Type``, at most 2 MB."""
        mimetype = request.mimetype
        if not (
            mimetype == "application/json"
            or (mimetype.startswith("application/") and mimetype.endswith("+json"))
        ):
            raise Reply(plain(415, "Expected request with `Content-Type: application/json`"))
        data = request.get_data(cache=True)
        if len(data) > MAX_BODY:
            raise Reply(plain(413, "Failed to buffer the request body: length limit exceeded"))
        return data

    def _fields(
        self, request: Request, spec: Sequence[tuple[str, str]], struct: str
    ) -> dict[str, Any]:
        try:
            return read_struct(self._body(request), spec, struct)
        except BodyError as exc:
            raise Reply(plain(exc.status, exc.text)) from None

    @staticmethod
    def _path_int(value: str) -> int:
        """``Path<i64>``: 400 ``Invalid URL: Cannot parse `v` to a `i64```."""
        try:
            return parse_i64(value)
        except ParseIntError:
            raise Reply(plain(400, f"Invalid URL: Cannot parse `{value}` to a `i64`")) from None

    @staticmethod
    def _path_ints(*values: str) -> tuple[int, ...]:
        """``Path<(i64, i64)>``: the first bad value, named by its index."""
        parsed: list[int] = []
        for index, value in enumerate(values):
            try:
                parsed.append(parse_i64(value))
            except ParseIntError:
                raise Reply(
                    plain(
                        400,
                        f"Invalid URL: Cannot parse value at index {index} "
                        f"with value `{value}` to a `i64`",
                    )
                ) from None
        return tuple(parsed)

    @staticmethod
    def _query_org_id(request: Request) -> int:
        """``Query<OrgIdParam>``: empty means the default; a repeat is refused."""
        try:
            return read_query_org_id(
                request.environ.get("QUERY_STRING", ""), DEFAULT_ORGANIZATION_ID
            )
        except QueryError as exc:
            raise Reply(plain(400, exc.text)) from None

    def _scope(self, auth: Auth, org_id: int) -> Namespace:
        """``get_org_namespace_safe``: shape C errors."""
        with self.state.lock:
            org = self.state.organizations.get(org_id)
            if org is None:
                raise Reply(error_c(404, f"Organization {org_id} not found"))
            if auth.namespace not in (DEFAULT_NAMESPACE, org.namespace):
                raise Reply(error_c(403, "Access denied"))
            return self.state.namespaces[org.namespace]

    def _caller(self, auth: Auth) -> tuple[Namespace, UserRecord] | None:
        ns = self.state.namespaces.get(auth.namespace)
        uid = auth.user_id
        if ns is None or uid not in ns.users:
            return None
        return ns, ns.users[uid]

    @staticmethod
    def _is_global_superadmin(auth: Auth) -> bool:
        return "superadmin" in auth.groups and auth.namespace == DEFAULT_NAMESPACE

    def _policy_check(self, ns: Namespace, user_id: int, resource: str, action: str) -> bool:
        if self.server_quirks and ns.name != DEFAULT_NAMESPACE:
            raise Reply(plain(500, _TENANT_POLICY_ERROR))
        return ns.is_allowed(user_id, resource, action)

    @staticmethod
    def _auth_response(ns: Namespace, user: UserRecord, token: str) -> dict[str, Any]:
        return {
            "user": ns.user_json(user),
            "token": token,
            "requires_password_change": user.first_login,
        }

    # -- health ------------------------------------------------------------

    @staticmethod
    def _now_rfc3339() -> str:
        """chrono's ``Utc::now().to_rfc3339()``: ``+00:00`` and nanoseconds (0/3/6/9 digits)."""
        nanos = time.time_ns()
        seconds, fraction = divmod(nanos, 1_000_000_000)
        base = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
        if fraction == 0:
            digits = ""
        elif fraction % 1_000_000 == 0:
            digits = f".{fraction // 1_000_000:03d}"
        elif fraction % 1000 == 0:
            digits = f".{fraction // 1000:06d}"
        else:
            digits = f".{fraction:09d}"
        return f"{base}{digits}+00:00"

    def h_health(self, request: Request, auth: Auth) -> Response:
        return json_response(
            {
                "status": "healthy",
                "timestamp": self._now_rfc3339(),
                "version": SERVER_VERSION,
                "uptime_seconds": int(time.monotonic() - self.started_at),
                "database": {"status": "healthy", "response_time_ms": 0, "active_connections": 1},
                "services": {"jwt_service": "healthy", "password_hashing": "healthy"},
            }
        )

    def h_health_ready(self, request: Request, auth: Auth) -> Response:
        return json_response({"status": "ready", "timestamp": self._now_rfc3339()})

    def h_health_live(self, request: Request, auth: Auth) -> Response:
        return json_response(
            {"status": "alive", "timestamp": self._now_rfc3339(), "version": SERVER_VERSION}
        )

    def h_openapi(self, request: Request, auth: Auth) -> Response:
        documented = (
            "/api/login",
            "/api/register",
            "/api/refresh-token",
            "/api/me",
            "/api/forgot-password",
            "/api/reset-password",
            "/api/org/secret",
            "/api/org/secret/rotate",
            "/api/health",
            "/api/health/ready",
            "/api/health/live",
        )
        paths = {
            path: {method.lower(): {"operationId": name}}
            for path, method, _gate, name in ROUTES
            if path in documented
        }
        return json_response(
            {
                "openapi": "3.1.0",
                "info": {"title": "Keyrunes", "version": SERVER_VERSION},
                "paths": paths,
                "components": {
                    "securitySchemes": {
                        "bearer_auth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                        "api_key": {"type": "apiKey", "in": "header", "name": "X-Organization-Key"},
                    }
                },
            }
        )

    # -- public auth routes ------------------------------------------------

    def h_register(self, request: Request, auth: Auth) -> Response:
        body = self._fields(
            request,
            (
                ("email", "str"),
                ("username", "str"),
                ("password", "str"),
                ("organization_id", "id?"),
                ("namespace", "str"),
            ),
            "RegisterApi",
        )
        org_id = body["organization_id"]
        if org_id is None:
            org_id = DEFAULT_ORGANIZATION_ID
        with self.state.lock:
            try:
                # The user count comes first, then the email and password rules
                # (src/services/user_service.rs:235-257).
                ns = self.state.namespace(body["namespace"])
                if not EMAIL_RE.match(body["email"]):
                    raise EmulatorError("invalid email")
                if len(body["password"].encode()) < MIN_PASSWORD_LENGTH:
                    raise EmulatorError("password too short")
                if ns.users:
                    groups = ["users"]
                elif ns.name == DEFAULT_NAMESPACE:
                    groups = ["superadmin", "users"]
                else:
                    groups = ["admin", "users"]
                user = self.state.create_user(
                    ns,
                    organization_id=org_id,
                    email=body["email"],
                    username=body["username"],
                    password=body["password"],
                    groups=groups,
                    first_login=False,
                )
            except EmulatorError as exc:
                return error_a(400, exc.message)
            token = self.token_for(ns, user)
            return json_response(self._auth_response(ns, user, token), 201)

    def h_login(self, request: Request, auth: Auth) -> Response:
        body = self._fields(
            request,
            (("identity", "str"), ("password", "str"), ("namespace", "str")),
            "LoginApi",
        )
        with self.state.lock:
            try:
                ns = self.state.namespace(body["namespace"])
                check_text(body["identity"])
            except EmulatorError as exc:
                return error_a(401, exc.message)
            user = ns.user_by_identity(body["identity"])
            if user is None or not verify_password(body["password"], user.password_hash):
                return error_a(401, "invalid credentials")
            return json_response(self._auth_response(ns, user, self.token_for(ns, user)))

    def h_forgot_password(self, request: Request, auth: Auth) -> Response:
        body = self._fields(request, (("email", "str"), ("namespace", "str")), "ForgotPasswordApi")
        with self.state.lock:
            try:
                ns = self.state.namespace(body["namespace"])
                check_text(body["email"])
            except EmulatorError as exc:
                return error_a(400, exc.message)
            user = ns.user_by_email(body["email"])
            if user is None:
                return error_a(400, "email not found")
            token = self.state.create_reset_token(ns, user.user_id)
        return json_response(
            {
                "message": "If the email is registered, you will receive a reset link.",
                "reset_url": f"?forgot_password={token}",
            }
        )

    def h_reset_password(self, request: Request, auth: Auth) -> Response:
        body = self._fields(
            request,
            (("token", "str"), ("new_password", "str"), ("namespace", "str")),
            "ResetPasswordApi",
        )
        with self.state.lock:
            try:
                ns = self.state.namespace(body["namespace"])
                check_text(body["token"])
            except EmulatorError as exc:
                return error_a(400, exc.message)
            # The token is looked up before the length rule (src/services/user_service.rs:490-499).
            user_id = self.state.valid_reset_token(ns, body["token"])
            if user_id is None:
                return error_a(400, "invalid or expired reset token")
            if len(body["new_password"].encode()) < MIN_PASSWORD_LENGTH:
                return error_a(400, "new password too short")
            self.state.consume_reset_token(ns, body["token"])
            self.state.set_password(ns, user_id, body["new_password"])
        return json_response({"message": "Password reset successfully"})

    # -- bearer routes -----------------------------------------------------

    def h_refresh_token(self, request: Request, auth: Auth) -> Response:
        body = self._fields(request, (("token", "str"),), "RefreshTokenRequest")
        try:
            claims = self.decode(body["token"])
            parse_i64(claims["sub"])
        except TokenError as exc:
            message = str(exc)
            if message == "token expired":
                return error_a(401, "Invalid or expired token")
            return error_a(401, message)
        except ParseIntError as exc:
            return error_a(401, str(exc))
        copied = {
            k: claims[k]
            for k in ("sub", "email", "username", "groups", "namespace", "organization_id")
        }
        return json_response({"token": self.sign(copied)})

    def h_me(self, request: Request, auth: Auth) -> Response:
        try:
            parse_i64(auth.token["sub"])
        except ParseIntError as exc:
            # ``claims.sub.parse()?`` (src/services/user_service.rs:583) reports Rust's text.
            return error_a(401, str(exc))
        with self.state.lock:
            found = self._caller(auth)
            if found is None:
                return error_a(401, "user not found")
            ns, user = found
            return json_response(ns.user_json(user))

    def h_update_profile(self, request: Request, auth: Auth) -> Response:
        body = self._fields(
            request, (("email", "str?"), ("username", "str?")), "UpdateProfileRequest"
        )
        with self.state.lock:
            ns = self.state.namespaces.get(auth.namespace)
            uid = auth.user_id
            if ns is None:
                return plain(400, _MISSING_RELATION)
            try:
                user = self.state.update_user(
                    ns, uid, email=body["email"], username=body["username"]
                )
            except EmulatorError as exc:
                return plain(400, exc.message)
            return json_response(ns.user_json(user))

    def h_change_password(self, request: Request, auth: Auth) -> Response:
        body = self._fields(
            request,
            (("current_password", "str"), ("new_password", "str")),
            "ChangePasswordRequest",
        )
        with self.state.lock:
            found = self._caller(auth)
            if found is None:
                return plain(400, "User not found")
            ns, user = found
            if not verify_password(body["current_password"], user.password_hash):
                return plain(400, "Invalid current password")
            if len(body["new_password"].encode()) < MIN_PASSWORD_LENGTH:
                return plain(400, "password too short")
            self.state.set_password(ns, user.user_id, body["new_password"], first_login=False)
        return json_response({"message": "Password changed successfully"})

    def _own_organization(self, auth: Auth, verb: str) -> OrganizationRecord:
        if not {"admin", "superadmin"} & set(auth.groups):
            raise Reply(error_a(403, f"Insufficient permissions to {verb} Organization Secret"))
        found = self._caller(auth)
        if found is None:
            raise Reply(error_a(401, "User not found"))
        org = self.state.organizations.get(found[1].organization_id)
        if org is None:
            raise Reply(error_a(404, "Organization not found"))
        return org

    def h_org_secret(self, request: Request, auth: Auth) -> Response:
        with self.state.lock:
            org = self._own_organization(auth, "view")
            return json_response(
                {"organization_id": org.organization_id, "secret_key": org.secret_key}
            )

    def h_rotate_org_secret(self, request: Request, auth: Auth) -> Response:
        with self.state.lock:
            org = self._own_organization(auth, "rotate")
            key = self.state.rotate_key(org.organization_id)
            return json_response({"organization_id": org.organization_id, "secret_key": key})

    def h_list_organizations(self, request: Request, auth: Auth) -> Response:
        with self.state.lock:
            if self._is_global_superadmin(auth):
                orgs = sorted(
                    self.state.organizations.values(), key=lambda o: collation_key(o.name)
                )
                return json_response([o.to_json() for o in orgs])
            if not {"admin", "superadmin"} & set(auth.groups):
                return plain(403, "Insufficient permissions")
            found = self._caller(auth)
            if found is None:
                return plain(401, "User not found")
            org = self.state.organizations.get(found[1].organization_id)
            if org is None:
                return plain(404, "Organization not found")
            return json_response([org.to_json()])

    # -- organizations (admin gate) -----------------------------------------

    def h_create_organization(self, request: Request, auth: Auth) -> Response:
        body = self._fields(
            request,
            (
                ("name", "str"),
                ("namespace", "str"),
                ("base_url", "str?"),
                ("description", "str?blank"),
            ),
            "CreateOrganizationRequest",
        )
        if not self._is_global_superadmin(auth):
            return plain(403, "Global Superadmin access required")
        try:
            org = self.state.create_organization(
                body["name"],
                body["namespace"],
                description=body["description"],
                base_url=body["base_url"],
            )
        except EmulatorError as exc:
            return plain(400, exc.message)
        return json_response(org.to_json(), 201)

    def h_delete_organization(self, request: Request, auth: Auth, org_id: str) -> Response:
        organization_id = self._path_int(org_id)
        if not self._is_global_superadmin(auth):
            return plain(403, "Global Superadmin access required")
        self.state.delete_organization(organization_id)
        return empty(204)

    def h_rotate_organization_key(self, request: Request, auth: Auth, org_id: str) -> Response:
        organization_id = self._path_int(org_id)
        if "superadmin" not in auth.groups:
            return plain(403, "Superadmin access required")
        key = self.state.rotate_key(organization_id)
        return json_response(
            {
                "organization_id": organization_id,
                "secret_key": key,
                "message": "Key rotated successfully",
            }
        )

    def h_dashboard(self, request: Request, auth: Auth) -> Response:
        if "superadmin" not in auth.groups:
            return plain(403, "Superadmin access required")
        claims = auth.token
        with self.state.lock:
            public = self.state.namespaces.get(DEFAULT_NAMESPACE)
            counts = (
                (len(public.users), len(public.groups), len(public.policies))
                if public
                else (0, 0, 0)
            )
        return json_response(
            {
                "total_users": counts[0],
                "total_groups": counts[1],
                "total_policies": counts[2],
                "current_admin": {
                    "user_id": auth.user_id,
                    "username": claims["username"],
                    "email": claims["email"],
                    "groups": claims["groups"],
                },
            }
        )

    # -- users (admin gate) ------------------------------------------------

    def h_list_users(self, request: Request, auth: Auth) -> Response:
        org_id = self._query_org_id(request)
        with self.state.lock:
            ns = self._scope(auth, org_id)
            users = sorted(ns.users.values(), key=lambda u: (u.created_at, u.user_id), reverse=True)
            return json_response([ns.admin_user_json(u) for u in users])

    def h_create_user(self, request: Request, auth: Auth) -> Response:
        body = self._fields(
            request,
            (
                ("organization_id", "id"),
                ("email", "email"),
                ("username", "str"),
                ("password", "password"),
                ("groups", "strlist?"),
                ("first_login", "bool=true"),
            ),
            "CreateUserRequest",
        )
        with self.state.lock:
            ns = self._scope(auth, body["organization_id"])
            groups = body["groups"] or []
            first_login = body["first_login"]
            try:
                user = self.state.create_user(
                    ns,
                    organization_id=body["organization_id"],
                    email=body["email"],
                    username=body["username"],
                    password=body["password"],
                    groups=groups,
                    first_login=first_login,
                    assigned_by=self._assigner(auth, ns),
                )
            except EmulatorError as exc:
                return plain(400, exc.message)
            return json_response(ns.user_json(user), 201)

    @staticmethod
    def _assigner(auth: Auth, ns: Namespace) -> int | None:
        """``assigned_by``: the admin's id when it acts in its own namespace.

        src/api/admin.rs:106-110 and :362-366.
        """
        return auth.user_id if auth.namespace == ns.name else None

    def h_update_user(self, request: Request, auth: Auth, user_id: str) -> Response:
        uid = self._path_int(user_id)
        org_id = self._query_org_id(request)
        body = self._fields(
            request,
            (("email", "str?"), ("username", "str?"), ("first_login", "bool?")),
            "UpdateUserRequest",
        )
        with self.state.lock:
            ns = self._scope(auth, org_id)
            try:
                user = self.state.update_user(
                    ns,
                    uid,
                    email=body["email"],
                    username=body["username"],
                    first_login=body["first_login"],
                )
            except EmulatorError as exc:
                return plain(400, exc.message)
            return json_response(ns.user_json(user))

    def h_delete_user(self, request: Request, auth: Auth, user_id: str) -> Response:
        uid = self._path_int(user_id)
        if uid == auth.user_id:
            return plain(400, "Cannot delete yourself")
        with self.state.lock:
            ns = self.state.namespaces.get(auth.namespace)
            if ns is None:
                return plain(500, _MISSING_RELATION)
            try:
                self.state.delete_user(ns, uid)
            except EmulatorError as exc:
                return plain(500, exc.message)
        return empty(204)

    def h_admin_reset_password(self, request: Request, auth: Auth, user_id: str) -> Response:
        uid = self._path_int(user_id)
        org_id = self._query_org_id(request)
        with self.state.lock:
            ns = self._scope(auth, org_id)
            password = temporary_password()
            self.state.set_password(ns, uid, password, first_login=True)
        return json_response({"temporary_password": password})

    def h_send_reset(self, request: Request, auth: Auth, user_id: str) -> Response:
        uid = self._path_int(user_id)
        org_id = self._query_org_id(request)
        with self.state.lock:
            ns = self._scope(auth, org_id)
            if uid not in ns.users:
                return plain(404, "User not found")
            self.state.create_reset_token(ns, uid)
        return json_response({"message": "Reset email sent"})

    # -- groups and policies (admin gate) ----------------------------------

    def h_list_groups(self, request: Request, auth: Auth) -> Response:
        org_id = self._query_org_id(request)
        with self.state.lock:
            ns = self._scope(auth, org_id)
            groups = sorted(
                (g for g in ns.groups.values() if g.organization_id == org_id),
                key=lambda g: collation_key(g.name),
            )
            return json_response([g.to_json() for g in groups])

    def h_create_group(self, request: Request, auth: Auth) -> Response:
        body = self._fields(
            request,
            (("organization_id", "id"), ("name", "str"), ("description", "str?")),
            "CreateGroupRequest",
        )
        with self.state.lock:
            ns = self._scope(auth, body["organization_id"])
            try:
                group = self.state.create_group(
                    ns, body["organization_id"], body["name"], body["description"]
                )
            except EmulatorError as exc:
                return plain(400, exc.message)
            return json_response(group.to_json(), 201)

    def h_list_policies(self, request: Request, auth: Auth) -> Response:
        org_id = self._query_org_id(request)
        with self.state.lock:
            ns = self._scope(auth, org_id)
            policies = sorted(
                (p for p in ns.policies.values() if p.organization_id == org_id),
                key=lambda p: collation_key(p.name),
            )
            return json_response([p.to_json() for p in policies])

    def h_create_policy(self, request: Request, auth: Auth) -> Response:
        body = self._fields(
            request,
            (
                ("organization_id", "i64"),
                ("name", "str"),
                ("description", "str?"),
                ("resource", "str"),
                ("action", "str"),
                ("effect", "effect"),
                ("conditions", "any?"),
            ),
            "CreatePolicyRequest",
        )
        with self.state.lock:
            ns = self._scope(auth, body["organization_id"])
            try:
                policy = self.state.create_policy(
                    ns,
                    body["organization_id"],
                    body["name"],
                    body["resource"],
                    body["action"],
                    body["effect"],
                    description=body["description"],
                    conditions=body["conditions"],
                )
            except EmulatorError as exc:
                return plain(400, exc.message)
            return json_response(policy.to_json(), 201)

    def h_assign_group(self, request: Request, auth: Auth, user_id: str, group_id: str) -> Response:
        # Query is extracted before Path here (src/api/admin.rs handler arguments).
        org_id = self._query_org_id(request)
        uid, gid = self._path_ints(user_id, group_id)
        with self.state.lock:
            ns = self._scope(auth, org_id)
            try:
                self.state.add_membership(ns, uid, gid, assigned_by=self._assigner(auth, ns))
            except EmulatorError as exc:
                return plain(400, exc.message)
        return json_response({"message": "User assigned to group successfully"})

    def h_remove_group(self, request: Request, auth: Auth, user_id: str, group_id: str) -> Response:
        # Query is extracted before Path here (src/api/admin.rs handler arguments).
        org_id = self._query_org_id(request)
        uid, gid = self._path_ints(user_id, group_id)
        with self.state.lock:
            ns = self._scope(auth, org_id)
            self.state.remove_membership(ns, uid, gid)
        return json_response({"message": "User removed from group successfully"})

    # -- permission checks -------------------------------------------------

    def h_admin_check_permission(self, request: Request, auth: Auth) -> Response:
        body = self._fields(
            request,
            (("user_id", "id"), ("group_name", "str"), ("resource", "str"), ("action", "str")),
            "AdminCheckPermissionRequest",
        )
        with self.state.lock:
            ns = self.state.namespaces.get(auth.namespace)
            if ns is None:
                return plain(500, _MISSING_RELATION)
            allowed = self._policy_check(ns, body["user_id"], body["resource"], body["action"])
        return json_response(
            {
                "user_id": body["user_id"],
                "group_name": body["group_name"],
                "resource": body["resource"],
                "action": body["action"],
                "has_permission": allowed,
            }
        )

    def h_check_permission(self, request: Request, auth: Auth) -> Response:
        body = self._fields(
            request,
            (("user_id", "i64"), ("resource", "str"), ("action", "str")),
            "CheckPermissionRequest",
        )
        with self.state.lock:
            if auth.organization is not None:
                ns = self.state.namespaces.get(auth.organization.namespace)
            else:
                ns = self.state.namespaces.get(auth.namespace)
            if ns is None:
                return plain(500, _MISSING_RELATION)
            user = ns.users.get(body["user_id"])
            if user is None:
                return plain(404, "User not found")
            if (
                auth.organization is not None
                and user.organization_id != auth.organization.organization_id
            ):
                return plain(403, "User does not belong to this organization")
            allowed = self._policy_check(ns, user.user_id, body["resource"], body["action"])
        return json_response(
            {
                "allowed": allowed,
                "user_id": body["user_id"],
                "resource": body["resource"],
                "action": body["action"],
            }
        )

    def h_verify_org_key(self, request: Request, auth: Auth) -> Response:
        if self.server_quirks:
            return plain(500, _VERIFY_ORG_KEY_DEFECT)
        org = auth.organization
        if org is None:
            # Superadmin token without a key: answer for the token's organization.
            org = self.state.organizations.get(auth.token["organization_id"])
            if org is None:
                return plain(500, _VERIFY_ORG_KEY_DEFECT)
        return json_response(
            {"status": "success", "organization": org.name, "organization_id": org.organization_id}
        )

"""HTTP client for the Keyrunes JSON API.

One :class:`KeyrunesClient` wraps one pooled :class:`requests.Session` and is
shared by every user of the process (:func:`get_client`), so no method keeps a
caller's token: each takes it as an argument.

Error mapping (every failure derives from :class:`KeyrunesError`):

==============================================  =====================================
what happened                                    raised
==============================================  =====================================
401                                              :class:`AuthenticationFailed`
403                                              :class:`PermissionDenied`
404                                              :class:`NotFound`
400, 422                                         :class:`ValidationFailed`
other 4xx (405, 413, 415, ...)                   :class:`KeyrunesHTTPError`
connect error, timeout, 5xx/429 after retries   :class:`KeyrunesUnavailable`
500 from ``GET /api/verify-org-key``             :class:`VerifyOrgKeyDefect`
HTML, truncated JSON, wrong types, redirects     :class:`KeyrunesProtocolError`
==============================================  =====================================

The exception's ``message`` is the server's own reason: ``message`` of an
ErrorResponse body, else its ``error``, else the plain-text body (contract
§1.4, §12.7). ``status_code`` carries the HTTP status when there was one.

Retries: only idempotent methods (GET, HEAD, PUT, DELETE, OPTIONS) are
retried, on connection errors, timeouts, 5xx and 429, at most ``retries``
times with exponential backoff (``backoff * 2**attempt``; a ``Retry-After``
header is honoured up to ``max_retry_after`` seconds). POST and PATCH — login
included — are sent exactly once.

Nothing here logs a token, key or password: log lines carry method, path,
status and duration only.
"""

from __future__ import annotations

import email.utils
import logging
import threading
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import Any, TypeVar

import requests
from django.core.exceptions import ImproperlyConfigured
from pydantic import BaseModel, TypeAdapter
from pydantic import ValidationError as PydanticValidationError
from requests.adapters import HTTPAdapter

from keyrunes_django import __version__
from keyrunes_django.exceptions import (
    AuthenticationFailed,
    KeyrunesHTTPError,
    KeyrunesProtocolError,
    KeyrunesUnavailable,
    NotFound,
    PermissionDenied,
    ValidationFailed,
)
from keyrunes_django.schemas import (
    AdminCheckPermissionRequest,
    AdminPermissionCheck,
    AdminUser,
    AuthResponse,
    ChangePasswordRequest,
    CheckPermissionRequest,
    CreateGroupRequest,
    CreateOrganizationRequest,
    CreatePolicyRequest,
    CreateUserRequest,
    Dashboard,
    ForgotPasswordRequest,
    ForgotPasswordResponse,
    Group,
    HealthLive,
    HealthReady,
    HealthStatus,
    LoginRequest,
    MessageResponse,
    Organization,
    OrganizationKey,
    OrganizationSecret,
    OrgKeyVerification,
    PermissionCheck,
    Policy,
    PolicyEffect,
    RefreshTokenRequest,
    RegisterRequest,
    RequestModel,
    ResetPasswordRequest,
    TemporaryPassword,
    TokenResponse,
    UpdateProfileRequest,
    UpdateUserRequest,
    User,
)

__all__ = ["KeyrunesClient", "VerifyOrgKeyDefect", "get_client", "reset_client"]

logger = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
DEFAULT_TIMEOUT: tuple[float, float] = (3.05, 10.0)
DEFAULT_MAX_RETRY_AFTER = 5.0
_MAX_ERROR_TEXT = 500

Timeout = float | int | tuple[float, float] | list[float]


class VerifyOrgKeyDefect(KeyrunesUnavailable):
    """``GET /api/verify-org-key`` answered 500.

    This server version answers 500 to every *valid* key on that route
    (contract §3.4); an invalid key still gets 401. The request-auth layer
    catches this class (``status_code`` is 500) and falls back to probing
    ``POST /api/check-permission`` (§12.4). It is never retried.
    """


def _normalise_timeout(timeout: Timeout | None) -> tuple[float, float]:
    if timeout is None:
        raise ImproperlyConfigured("The Keyrunes client timeout must not be None.")
    if isinstance(timeout, bool):
        raise ImproperlyConfigured("The Keyrunes client timeout must be a number or a pair.")
    if isinstance(timeout, (int, float)):
        pair: tuple[Any, Any] = (timeout, timeout)
    else:
        try:
            connect, read = timeout
        except (TypeError, ValueError):
            raise ImproperlyConfigured(
                "The Keyrunes client timeout must be a number or a (connect, read) pair."
            ) from None
        pair = (connect, read)
    for value in pair:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ImproperlyConfigured(
                f"The Keyrunes client timeout must be positive numbers, got {timeout!r}."
            )
    return (float(pair[0]), float(pair[1]))


def _validation_summary(exc: PydanticValidationError) -> str:
    # Never include the input values: they may be secrets.
    parts = []
    for error in exc.errors(include_input=False, include_url=False)[:5]:
        loc = ".".join(str(p) for p in error.get("loc", ())) or "<body>"
        parts.append(f"{loc}: {error.get('msg', 'invalid')}")
    return "; ".join(parts)


def _error_message(response: requests.Response) -> tuple[str, Any]:
    """The server's reason for a failed request, and the parsed body."""
    text = response.text or ""
    body: Any = text
    try:
        data = response.json()
    except ValueError:
        data = None
    if isinstance(data, dict):
        body = data
        for key in ("message", "error"):
            value = data.get(key)
            if isinstance(value, str) and value.strip():
                return value.strip()[:_MAX_ERROR_TEXT], body
    message = text.strip()[:_MAX_ERROR_TEXT]
    return message or (response.reason or f"HTTP {response.status_code}"), body


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


class KeyrunesClient:
    """A thread-safe client for one Keyrunes server.

    :param base_url: root of the server, e.g. ``https://auth.example.com``.
    :param timeout: seconds, a number or a ``(connect, read)`` pair; never None.
    :param retries: extra attempts for idempotent requests.
    :param backoff: first retry delay in seconds, doubled on each retry.
    :param verify_ssl: passed to requests as ``verify`` (a bool or a CA bundle path).
    :param organization_key: default ``X-Organization-Key`` for the org-key routes.
    :param namespace: default namespace for login, register and the password flows.
    """

    def __init__(
        self,
        base_url: str,
        *,
        timeout: Timeout = DEFAULT_TIMEOUT,
        retries: int = 2,
        backoff: float = 0.25,
        verify_ssl: bool | str = True,
        organization_key: str | None = None,
        namespace: str = "public",
        max_retry_after: float = DEFAULT_MAX_RETRY_AFTER,
        pool_maxsize: int = 20,
        session: requests.Session | None = None,
    ) -> None:
        if not base_url or not isinstance(base_url, str):
            raise ImproperlyConfigured("KeyrunesClient needs a base_url.")
        self.base_url = base_url.rstrip("/")
        self.timeout = _normalise_timeout(timeout)
        self.retries = max(0, int(retries))
        self.backoff = max(0.0, float(backoff))
        self.max_retry_after = max(0.0, float(max_retry_after))
        self.verify_ssl = verify_ssl
        self.organization_key = organization_key
        self.namespace = namespace
        # Overridable in tests so backoff can be observed without sleeping.
        self.sleep: Callable[[float], None] = time.sleep
        if session is None:
            session = requests.Session()
            # Retries are ours (they must know the route); urllib3 makes none.
            adapter = HTTPAdapter(pool_connections=4, pool_maxsize=pool_maxsize, max_retries=0)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
        session.headers.update(
            {"Accept": "application/json", "User-Agent": f"keyrunes-django/{__version__}"}
        )
        self.session = session

    def __repr__(self) -> str:
        return f"KeyrunesClient({self.base_url!r}, namespace={self.namespace!r})"

    @classmethod
    def from_settings(cls) -> KeyrunesClient:
        """Build a client from ``settings.KEYRUNES``."""
        from keyrunes_django.conf import keyrunes_settings as s

        base_url = s.BASE_URL
        if not base_url:
            raise ImproperlyConfigured("KEYRUNES['BASE_URL'] is not set.")
        return cls(
            str(base_url),
            timeout=s.raw("TIMEOUT"),
            retries=int(s.RETRIES),
            backoff=float(s.BACKOFF),
            verify_ssl=s.VERIFY_SSL,
            organization_key=s.ORGANIZATION_KEY,
            namespace=str(s.NAMESPACE),
        )

    def close(self) -> None:
        self.session.close()

    # ------------------------------------------------------------------ plumbing

    @staticmethod
    def _bearer(token: str) -> dict[str, str]:
        # A token that cannot be a header value is refused here, the way the
        # server would refuse it, instead of raising from inside requests.
        if (
            not isinstance(token, str)
            or not token
            or not token.isascii()
            or any(c.isspace() or not c.isprintable() for c in token)
        ):
            raise AuthenticationFailed("Malformed bearer token.")
        return {"Authorization": f"Bearer {token}"}

    def _org_key(self, org_key: str | None) -> dict[str, str]:
        key = org_key if org_key is not None else self.organization_key
        if not key:
            raise ImproperlyConfigured(
                "No organization key: pass one or set KEYRUNES['ORGANIZATION_KEY']."
            )
        if not key.isascii() or any(c.isspace() or not c.isprintable() for c in key):
            raise AuthenticationFailed("Malformed organization key.")
        return {"X-Organization-Key": key}

    def _delay(self, attempt: int, response: requests.Response | None) -> float:
        delay = self.backoff * (2.0**attempt)
        if response is not None:
            hinted = _retry_after(response)
            if hinted is not None:
                delay = max(delay, hinted)
        return min(delay, max(self.max_retry_after, self.backoff))

    def request(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str] | None = None,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        retry: bool | None = None,
        accept_status: frozenset[int] = frozenset(),
        no_retry_status: frozenset[int] = frozenset(),
    ) -> requests.Response:
        """Send one request (with retries as allowed) and map failures to exceptions.

        Returns the response when its status is 2xx or in ``accept_status``.
        """
        method = method.upper()
        if retry is None:
            retry = method in IDEMPOTENT_METHODS
        attempts = 1 + (self.retries if retry else 0)
        url = self.base_url + path
        clean_params = {k: v for k, v in (params or {}).items() if v is not None}
        for attempt in range(attempts):
            last = attempt == attempts - 1
            started = time.monotonic()
            try:
                response = self.session.request(
                    method,
                    url,
                    headers=dict(headers or {}),
                    json=json,
                    params=clean_params or None,
                    timeout=self.timeout,
                    verify=self.verify_ssl,
                    allow_redirects=False,
                )
            except (
                requests.ConnectionError,
                requests.Timeout,
                requests.exceptions.ChunkedEncodingError,
            ) as exc:
                kind = "timed out" if isinstance(exc, requests.Timeout) else "unreachable"
                if not last:
                    delay = self._delay(attempt, None)
                    logger.warning(
                        "Keyrunes %s %s %s; retry %d/%d in %.2fs",
                        method, path, kind, attempt + 1, attempts - 1, delay,
                    )  # fmt: skip
                    self.sleep(delay)
                    continue
                logger.warning("Keyrunes %s %s %s", method, path, kind)
                raise KeyrunesUnavailable(f"Keyrunes {kind}: {type(exc).__name__}") from exc
            except requests.RequestException as exc:
                raise KeyrunesProtocolError(
                    f"Request to Keyrunes failed: {type(exc).__name__}"
                ) from exc
            status = response.status_code
            logger.debug(
                "Keyrunes %s %s -> %d in %.0fms",
                method, path, status, (time.monotonic() - started) * 1000,
            )  # fmt: skip
            if 200 <= status < 300 or status in accept_status:
                return response
            transient = status >= 500 or status == 429
            if transient and not last and status not in no_retry_status:
                delay = self._delay(attempt, response)
                logger.warning(
                    "Keyrunes %s %s -> %d; retry %d/%d in %.2fs",
                    method, path, status, attempt + 1, attempts - 1, delay,
                )  # fmt: skip
                self.sleep(delay)
                continue
            self._raise_for(response)
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _raise_for(response: requests.Response) -> None:
        status = response.status_code
        message, body = _error_message(response)
        if 300 <= status < 400:
            raise KeyrunesProtocolError(
                f"Keyrunes answered with a redirect: {message}", status_code=status, body=None
            )
        if status >= 500 or status == 429:
            raise KeyrunesUnavailable(message, status_code=status, body=body)
        cls: type[KeyrunesHTTPError] = {
            401: AuthenticationFailed,
            403: PermissionDenied,
            404: NotFound,
            400: ValidationFailed,
            422: ValidationFailed,
        }.get(status, KeyrunesHTTPError)
        if 400 <= status < 500:
            raise cls(message, status_code=status, body=body)
        raise KeyrunesProtocolError(  # 1xx and other oddities
            f"Unexpected HTTP status: {message}", status_code=status, body=body
        )

    @staticmethod
    def _json(response: requests.Response) -> Any:
        try:
            return response.json()
        except ValueError as exc:  # includes requests' JSONDecodeError
            ctype = response.headers.get("Content-Type", "?")
            raise KeyrunesProtocolError(
                f"Keyrunes answered with a body that is not JSON (Content-Type {ctype}).",
                status_code=response.status_code,
            ) from exc

    @classmethod
    def _parse(cls, response: requests.Response, model: type[M]) -> M:
        data = cls._json(response)
        try:
            return model.model_validate(data)
        except PydanticValidationError as exc:
            raise KeyrunesProtocolError(
                f"Unexpected {model.__name__} from Keyrunes: {_validation_summary(exc)}",
                status_code=response.status_code,
            ) from exc

    @classmethod
    def _parse_list(cls, response: requests.Response, model: type[M]) -> list[M]:
        data = cls._json(response)
        try:
            return TypeAdapter(list[model]).validate_python(data)  # type: ignore[valid-type]
        except PydanticValidationError as exc:
            raise KeyrunesProtocolError(
                f"Unexpected list of {model.__name__} from Keyrunes: {_validation_summary(exc)}",
                status_code=response.status_code,
            ) from exc

    def _call(
        self,
        method: str,
        path: str,
        model: type[M],
        *,
        token: str | None = None,
        body: RequestModel | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> M:
        headers = self._bearer(token) if token is not None else None
        payload = body.to_json() if body is not None else None
        response = self.request(method, path, headers=headers, json=payload, params=params)
        return self._parse(response, model)

    # ------------------------------------------------------------------ health

    def _health(self, path: str, model: type[M]) -> M:
        # 503 carries the same body as 200 and is an answer, not an outage; a
        # probe reports the present state, so it is not retried.
        response = self.request("GET", path, retry=False, accept_status=frozenset({503}))
        try:
            return self._parse(response, model)
        except KeyrunesProtocolError as exc:
            if response.status_code == 503:
                raise KeyrunesUnavailable(
                    "Keyrunes is unavailable (503).", status_code=503
                ) from exc
            raise

    def health(self) -> HealthStatus:
        """``GET /api/health``; an unhealthy server gives ``status == "unhealthy"``."""
        return self._health("/api/health", HealthStatus)

    def health_ready(self) -> HealthReady:
        return self._health("/api/health/ready", HealthReady)

    def health_live(self) -> HealthLive:
        return self._health("/api/health/live", HealthLive)

    # ------------------------------------------------------------------ public auth

    def register(
        self,
        *,
        email: str,
        username: str,
        password: str,
        namespace: str | None = None,
        organization_id: int | None = None,
    ) -> AuthResponse:
        body = RegisterRequest(
            email=email,
            username=username,
            password=password,
            namespace=namespace or self.namespace,
            organization_id=organization_id,
        )
        return self._call("POST", "/api/register", AuthResponse, body=body)

    def login(self, identity: str, password: str, namespace: str | None = None) -> AuthResponse:
        """``POST /api/login`` (never retried). 401 -> :class:`AuthenticationFailed`."""
        body = LoginRequest(
            identity=identity, password=password, namespace=namespace or self.namespace
        )
        return self._call("POST", "/api/login", AuthResponse, body=body)

    def forgot_password(self, email: str, namespace: str | None = None) -> ForgotPasswordResponse:
        body = ForgotPasswordRequest(email=email, namespace=namespace or self.namespace)
        return self._call("POST", "/api/forgot-password", ForgotPasswordResponse, body=body)

    def reset_password(
        self, reset_token: str, new_password: str, namespace: str | None = None
    ) -> MessageResponse:
        body = ResetPasswordRequest(
            token=reset_token, new_password=new_password, namespace=namespace or self.namespace
        )
        return self._call("POST", "/api/reset-password", MessageResponse, body=body)

    # ------------------------------------------------------------------ bearer routes

    def me(self, token: str) -> User:
        """``GET /api/me``: the user as the server's database has it now."""
        return self._call("GET", "/api/me", User, token=token)

    def refresh_token(self, token: str, body_token: str | None = None) -> TokenResponse:
        """``POST /api/refresh-token``: ``token`` passes the gate, ``body_token`` is re-signed."""
        body = RefreshTokenRequest(token=body_token if body_token is not None else token)
        return self._call("POST", "/api/refresh-token", TokenResponse, token=token, body=body)

    def update_profile(
        self, token: str, *, email: str | None = None, username: str | None = None
    ) -> User:
        body = UpdateProfileRequest(email=email, username=username)
        return self._call("PATCH", "/api/user/profile", User, token=token, body=body)

    def change_password(
        self, token: str, current_password: str, new_password: str
    ) -> MessageResponse:
        body = ChangePasswordRequest(current_password=current_password, new_password=new_password)
        return self._call(
            "POST", "/api/user/change-password", MessageResponse, token=token, body=body
        )

    def org_secret(self, token: str) -> OrganizationSecret:
        return self._call("GET", "/api/org/secret", OrganizationSecret, token=token)

    def rotate_org_secret(self, token: str) -> OrganizationSecret:
        return self._call("POST", "/api/org/secret/rotate", OrganizationSecret, token=token)

    # ------------------------------------------------------------------ org-key routes

    def verify_org_key(self, org_key: str | None = None) -> OrgKeyVerification:
        """``GET /api/verify-org-key``.

        401 -> :class:`AuthenticationFailed` (invalid key); 500 ->
        :class:`VerifyOrgKeyDefect` at once, without retries (this server
        version's defect for a valid key, contract §3.4).
        """
        headers = self._org_key(org_key)
        try:
            response = self.request(
                "GET", "/api/verify-org-key", headers=headers, no_retry_status=frozenset({500})
            )
        except KeyrunesUnavailable as exc:
            if exc.status_code == 500:
                raise VerifyOrgKeyDefect(exc.message, status_code=500, body=exc.body) from exc
            raise
        return self._parse(response, OrgKeyVerification)

    def check_permission(
        self,
        user_id: int,
        resource: str,
        action: str,
        *,
        org_key: str | None = None,
        token: str | None = None,
    ) -> PermissionCheck:
        """``POST /api/check-permission``.

        Sends ``org_key`` if given, else ``token`` (a superadmin bearer) if
        given, else the configured ``ORGANIZATION_KEY``. The server lets a
        present key decide alone, so key and token are never sent together.
        """
        if org_key is not None or token is None:
            headers = self._org_key(org_key)
        else:
            headers = self._bearer(token)
        body = CheckPermissionRequest(user_id=user_id, resource=resource, action=action)
        response = self.request(
            "POST", "/api/check-permission", headers=headers, json=body.to_json()
        )
        return self._parse(response, PermissionCheck)

    # ------------------------------------------------------------------ admin routes

    def admin_check_permission(
        self, token: str, user_id: int, resource: str, action: str, group_name: str = ""
    ) -> AdminPermissionCheck:
        body = AdminCheckPermissionRequest(
            user_id=user_id, group_name=group_name, resource=resource, action=action
        )
        return self._call(
            "POST", "/api/admin/check-permission", AdminPermissionCheck, token=token, body=body
        )

    def dashboard(self, token: str) -> Dashboard:
        return self._call("GET", "/api/admin/dashboard", Dashboard, token=token)

    def list_users(self, token: str, org_id: int | None = None) -> list[AdminUser]:
        response = self.request(
            "GET", "/api/admin/users", headers=self._bearer(token), params={"org_id": org_id}
        )
        return self._parse_list(response, AdminUser)

    def create_user(
        self,
        token: str,
        *,
        organization_id: int,
        email: str,
        username: str,
        password: str,
        groups: list[str] | tuple[str, ...] | None = None,
        first_login: bool | None = None,
    ) -> User:
        body = CreateUserRequest(
            organization_id=organization_id,
            email=email,
            username=username,
            password=password,
            groups=list(groups) if groups is not None else None,
            first_login=first_login,
        )
        return self._call("POST", "/api/admin/user", User, token=token, body=body)

    def update_user(
        self,
        token: str,
        user_id: int,
        *,
        org_id: int | None = None,
        email: str | None = None,
        username: str | None = None,
        first_login: bool | None = None,
    ) -> User:
        body = UpdateUserRequest(email=email, username=username, first_login=first_login)
        return self._call(
            "PATCH",
            f"/api/admin/users/{int(user_id)}",
            User,
            token=token,
            body=body,
            params={"org_id": org_id},
        )

    def delete_user(self, token: str, user_id: int) -> None:
        """``DELETE /api/admin/users/{id}`` (acts in the caller's token namespace)."""
        self.request("DELETE", f"/api/admin/users/{int(user_id)}", headers=self._bearer(token))

    def reset_user_password(
        self, token: str, user_id: int, org_id: int | None = None
    ) -> TemporaryPassword:
        return self._call(
            "POST",
            f"/api/admin/users/{int(user_id)}/reset-password",
            TemporaryPassword,
            token=token,
            params={"org_id": org_id},
        )

    def send_password_reset(
        self, token: str, user_id: int, org_id: int | None = None
    ) -> MessageResponse:
        return self._call(
            "POST",
            f"/api/admin/users/{int(user_id)}/send-reset",
            MessageResponse,
            token=token,
            params={"org_id": org_id},
        )

    def list_groups(self, token: str, org_id: int | None = None) -> list[Group]:
        response = self.request(
            "GET", "/api/admin/groups", headers=self._bearer(token), params={"org_id": org_id}
        )
        return self._parse_list(response, Group)

    def create_group(
        self, token: str, *, organization_id: int, name: str, description: str | None = None
    ) -> Group:
        body = CreateGroupRequest(
            organization_id=organization_id, name=name, description=description
        )
        return self._call("POST", "/api/admin/groups", Group, token=token, body=body)

    def list_policies(self, token: str, org_id: int | None = None) -> list[Policy]:
        response = self.request(
            "GET", "/api/admin/policies", headers=self._bearer(token), params={"org_id": org_id}
        )
        return self._parse_list(response, Policy)

    def create_policy(
        self,
        token: str,
        *,
        organization_id: int,
        name: str,
        resource: str,
        action: str,
        effect: PolicyEffect = "Allow",
        description: str | None = None,
        conditions: Any = None,
    ) -> Policy:
        body = CreatePolicyRequest(
            organization_id=organization_id,
            name=name,
            resource=resource,
            action=action,
            effect=effect,
            description=description,
            conditions=conditions,
        )
        return self._call("POST", "/api/admin/policies", Policy, token=token, body=body)

    def add_user_to_group(
        self, token: str, user_id: int, group_id: int, org_id: int | None = None
    ) -> MessageResponse:
        return self._call(
            "POST",
            f"/api/admin/users/{int(user_id)}/groups/{int(group_id)}",
            MessageResponse,
            token=token,
            params={"org_id": org_id},
        )

    def remove_user_from_group(
        self, token: str, user_id: int, group_id: int, org_id: int | None = None
    ) -> MessageResponse:
        return self._call(
            "DELETE",
            f"/api/admin/users/{int(user_id)}/groups/{int(group_id)}",
            MessageResponse,
            token=token,
            params={"org_id": org_id},
        )

    def list_organizations(self, token: str) -> list[Organization]:
        response = self.request("GET", "/api/admin/organizations", headers=self._bearer(token))
        return self._parse_list(response, Organization)

    def create_organization(
        self,
        token: str,
        *,
        name: str,
        namespace: str,
        description: str | None = None,
        base_url: str | None = None,
    ) -> Organization:
        body = CreateOrganizationRequest(
            name=name, namespace=namespace, description=description, base_url=base_url
        )
        return self._call("POST", "/api/admin/organizations", Organization, token=token, body=body)

    def delete_organization(self, token: str, organization_id: int) -> None:
        self.request(
            "DELETE",
            f"/api/admin/organizations/{int(organization_id)}",
            headers=self._bearer(token),
        )

    def rotate_organization_key(self, token: str, organization_id: int) -> OrganizationKey:
        return self._call(
            "POST",
            f"/api/admin/organizations/{int(organization_id)}/rotate-key",
            OrganizationKey,
            token=token,
        )


# ---------------------------------------------------------------------- process-wide

_lock = threading.Lock()
_client: KeyrunesClient | None = None
_fingerprint: tuple[Any, ...] | None = None


def _settings_fingerprint() -> tuple[Any, ...]:
    from keyrunes_django.conf import keyrunes_settings as s

    verify = s.VERIFY_SSL
    return (
        s.BASE_URL,
        repr(s.raw("TIMEOUT")),
        s.RETRIES,
        s.BACKOFF,
        verify if isinstance(verify, (bool, str)) else repr(verify),
        s.ORGANIZATION_KEY,
        s.NAMESPACE,
    )


def get_client() -> KeyrunesClient:
    """The process-wide client, rebuilt when the relevant ``KEYRUNES`` settings change."""
    global _client, _fingerprint
    fingerprint = _settings_fingerprint()
    client = _client
    if client is not None and fingerprint == _fingerprint:
        return client
    with _lock:
        if _client is None or fingerprint != _fingerprint:
            # The old client is not closed: other threads may still be using it.
            _client = KeyrunesClient.from_settings()
            _fingerprint = fingerprint
        return _client


def reset_client() -> None:
    """Forget the process-wide client (the next :func:`get_client` builds a new one)."""
    global _client, _fingerprint
    with _lock:
        _client = None
        _fingerprint = None


def _on_setting_changed(*, setting: str, **kwargs: Any) -> None:
    if setting == "KEYRUNES":
        reset_client()


def _connect_signals() -> None:
    from django.core.signals import setting_changed

    setting_changed.connect(_on_setting_changed, dispatch_uid="keyrunes_django.client.reset")


_connect_signals()

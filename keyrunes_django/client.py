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
deadline missed                                 :class:`KeyrunesUnavailable`
circuit breaker open (no request sent)          :class:`CircuitOpen`
500 from ``GET /api/verify-org-key``            :class:`VerifyOrgKeyDefect`
HTML, truncated JSON, wrong types, redirects    :class:`KeyrunesProtocolError`
body over the size limit, JSON nested too deep  :class:`KeyrunesProtocolError`
==============================================  =====================================

The exception's ``message`` is the server's own reason: ``message`` of an
ErrorResponse body, else its ``error``, else the plain-text body.
``status_code`` carries the HTTP status when there was one; ``retry_after``
(on :class:`KeyrunesUnavailable`) the seconds to wait when known.

Time: every call has one overall deadline (``DEADLINE`` seconds, measured on
a monotonic clock from the start of the call) that covers connecting, sending,
reading the headers and the whole body, every retry and every back-off sleep.
``TIMEOUT`` still bounds each socket operation (one connect, one ``recv``);
before each ``recv`` the socket's timeout is lowered to what is left of the
deadline, so an answer dripped a byte at a time is cut off at the deadline. A
missed deadline is :class:`KeyrunesUnavailable`.

Retries: only idempotent methods (GET, HEAD, PUT, DELETE, OPTIONS) are
retried, on connection errors, timeouts, 5xx and 429, at most ``retries``
times with exponential backoff (``backoff * 2**attempt``; a ``Retry-After``
header is honoured up to ``max_retry_after`` seconds), only while the circuit
breaker (:mod:`keyrunes_django.breaker`) is closed, and never when the wait
would reach past the deadline. POST and PATCH — login included — are sent
exactly once.

Size: a body is read in chunks after decompression and refused with
:class:`KeyrunesProtocolError` once it passes ``MAX_RESPONSE_BYTES`` (or a
call's ``max_bytes``), so neither a huge body nor a gzip bomb is ever held in
memory. JSON nested deeper than :data:`MAX_JSON_DEPTH` is a
:class:`KeyrunesProtocolError` too, wherever it appears (answer or error body).

Circuit breaker: every attempt asks the process-wide breaker first; while it
is open the call fails at once with :class:`CircuitOpen` (no request sent).

Nothing here logs a token, key or password: log lines carry method, path,
status and duration only.
"""

from __future__ import annotations

import email.utils
import http.client
import io
import json as jsonlib
import logging
import math
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, NoReturn, TypeVar

import requests
import urllib3
import urllib3.connection
from django.core.exceptions import ImproperlyConfigured
from pydantic import BaseModel, TypeAdapter
from pydantic import ValidationError as PydanticValidationError
from requests.adapters import HTTPAdapter

from keyrunes_django import signals
from keyrunes_django.breaker import CLOSED, CircuitBreaker, Permit, get_breaker, reset_breaker
from keyrunes_django.exceptions import (
    AuthenticationFailed,
    CircuitOpen,
    KeyrunesError,
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
from keyrunes_django.version import __version__

__all__ = [
    "MAX_JSON_DEPTH",
    "CircuitOpen",
    "KeyrunesClient",
    "VerifyOrgKeyDefect",
    "get_client",
    "load_json",
    "normalise_deadline",
    "normalise_timeout",
    "reset_client",
    "worst_case_seconds",
]

logger = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
#: Calls that change nothing: only these may be sent as a background probe,
#: since their caller is answered before the call ends.
SAFE_METHODS = frozenset({"GET", "HEAD"})
#: Seconds a caller is told to wait while the breaker's probe runs in the background.
PROBE_RETRY_AFTER = 1.0
DEFAULT_TIMEOUT: tuple[float, float] = (3.05, 10.0)
DEFAULT_MAX_RETRY_AFTER = 5.0
DEFAULT_DEADLINE = 5.0
DEFAULT_MAX_RESPONSE_BYTES = 1024 * 1024
#: JSON nested deeper than this is refused: nothing Keyrunes sends comes close,
#: and deep values break code that walks them recursively.
MAX_JSON_DEPTH = 64
_MAX_ERROR_TEXT = 500
_CHUNK_BYTES = 64 * 1024

Timeout = float | int | tuple[float, float] | list[float]


class VerifyOrgKeyDefect(KeyrunesUnavailable):
    """``GET /api/verify-org-key`` answered 500.

    This server version answers 500 to every *valid* key on that route; an
    invalid key still gets 401. The request-auth layer catches this class
    (``status_code`` is 500) and falls back to probing
    ``POST /api/check-permission``. It is never retried, and the circuit
    breaker does not count it as a failure.
    """


def normalise_timeout(timeout: Timeout | None) -> tuple[float, float]:
    """``TIMEOUT`` as a (connect, read) pair; ImproperlyConfigured when it is not valid."""
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
        if not _is_positive_number(value):
            raise ImproperlyConfigured(
                f"The Keyrunes client timeout must be positive numbers, got {timeout!r}."
            )
    return (float(pair[0]), float(pair[1]))


def _is_positive_number(value: Any) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and value > 0
        and math.isfinite(value)
    )


def normalise_deadline(deadline: Any) -> float:
    """``DEADLINE`` in seconds; ImproperlyConfigured unless a positive finite number."""
    if not _is_positive_number(deadline):
        raise ImproperlyConfigured(
            f"KEYRUNES['DEADLINE'] = {deadline!r} must be a positive number of seconds."
        )
    return float(deadline)


def normalise_max_bytes(max_bytes: Any) -> int:
    """``MAX_RESPONSE_BYTES``; ImproperlyConfigured unless a positive integer."""
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes <= 0:
        raise ImproperlyConfigured(
            f"KEYRUNES['MAX_RESPONSE_BYTES'] = {max_bytes!r} must be a positive integer."
        )
    return max_bytes


def worst_case_seconds(
    timeout: Timeout,
    retries: int,
    backoff: float,
    deadline: float,
    max_retry_after: float = DEFAULT_MAX_RETRY_AFTER,
) -> float:
    """The longest one idempotent call can take with these settings.

    Every attempt spending its whole connect and read timeouts, plus the
    back-off between attempts, capped by the deadline.
    """
    connect, read = normalise_timeout(timeout)
    limit = normalise_deadline(deadline)
    cap = max(max_retry_after, backoff)
    total = connect + read
    for attempt in range(max(0, retries)):
        if total >= limit:
            break
        total += min(backoff * 2.0 ** min(attempt, 64), cap) + connect + read
    return min(total, limit)


class _TooDeep(ValueError):
    pass


def _nesting_exceeds(value: Any, limit: int) -> bool:
    # Iterative, so a deep value cannot exhaust the interpreter's stack here.
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


def load_json(data: bytes | str) -> Any:
    """Parse a JSON document from Keyrunes.

    Raises ValueError when it is not JSON, and its subclass for JSON nested
    deeper than :data:`MAX_JSON_DEPTH` (which may also be too deep for the
    parser itself: that RecursionError never escapes).
    """
    try:
        value = jsonlib.loads(data)
    except RecursionError:
        raise _TooDeep("JSON nested too deeply") from None
    if isinstance(value, (dict, list)) and _nesting_exceeds(value, MAX_JSON_DEPTH):
        raise _TooDeep(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    return value


# ---------------------------------------------------------------------- deadline at the socket


@dataclass(frozen=True)
class _Budget:
    """What one call may still spend: its deadline and the per-recv read timeout."""

    deadline: float  # a time.monotonic() value
    read_timeout: float

    def remaining(self) -> float:
        return self.deadline - time.monotonic()


# Set around each request so the connection reading the answer knows the
# deadline of the call it belongs to.
_BUDGET: ContextVar[_Budget | None] = ContextVar("keyrunes_call_budget", default=None)


class _DeadlineReached(TimeoutError):
    """Raised from a socket read once the call's deadline has passed."""


class _DeadlineReader(io.RawIOBase):
    """A socket reader that never waits past its call's deadline.

    Before each ``recv`` the socket timeout becomes the smaller of the read
    timeout and what is left of the deadline; so a status line, headers or
    body dripped a byte at a time end at the deadline, not after
    ``read timeout x bytes``.
    """

    def __init__(self, sock: socket.socket, raw: Any, budget: _Budget) -> None:
        super().__init__()
        self._sock = sock
        self._raw = raw
        self._budget = budget

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int | None:
        remaining = self._budget.remaining()
        if remaining <= 0:
            raise _DeadlineReached("the Keyrunes call deadline has passed")
        self._sock.settimeout(min(self._budget.read_timeout, remaining))
        result: int | None = self._raw.readinto(buffer)
        return result

    def fileno(self) -> int:
        return int(self._raw.fileno())

    def close(self) -> None:
        if not self.closed:
            self._raw.close()
        super().close()


class _DeadlineHTTPResponse(http.client.HTTPResponse):
    def __init__(self, sock: socket.socket, *args: Any, **kwargs: Any) -> None:
        super().__init__(sock, *args, **kwargs)
        budget = _BUDGET.get()
        if budget is not None:
            # Nothing has been read yet; detach keeps the socket file open.
            raw = self.fp.detach()
            self.fp = io.BufferedReader(_DeadlineReader(sock, raw, budget))


class _HTTPConnection(urllib3.connection.HTTPConnection):
    response_class = _DeadlineHTTPResponse


class _HTTPSConnection(urllib3.connection.HTTPSConnection):
    response_class = _DeadlineHTTPResponse


class _HTTPConnectionPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSConnectionPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


_POOL_CLASSES: dict[str, type[urllib3.HTTPConnectionPool]] = {
    "http": _HTTPConnectionPool,
    "https": _HTTPSConnectionPool,
}


class DeadlineAdapter(HTTPAdapter):
    """A requests adapter whose connections read under the calling request's deadline."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = dict(_POOL_CLASSES)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if not proxy.lower().startswith("socks"):
            manager.pool_classes_by_scheme = dict(_POOL_CLASSES)
        return manager


def _validation_summary(exc: PydanticValidationError) -> str:
    # Never include the input values: they may be secrets.
    parts = []
    for error in exc.errors(include_input=False, include_url=False)[:5]:
        loc = ".".join(str(p) for p in error.get("loc", ())) or "<body>"
        parts.append(f"{loc}: {error.get('msg', 'invalid')}")
    return "; ".join(parts)


def _body_text(response: requests.Response) -> str:
    raw = response.content or b""
    try:
        return raw.decode(response.encoding or "utf-8", errors="replace")
    except LookupError:  # the server named a charset Python does not know
        return raw.decode("utf-8", errors="replace")


def _error_message(response: requests.Response) -> tuple[str, Any]:
    """The server's reason for a failed request, and the parsed body."""
    text = _body_text(response)
    body: Any = text
    try:
        data = load_json(response.content or b"")
    except _TooDeep as exc:
        raise KeyrunesProtocolError(
            f"Keyrunes answered HTTP {response.status_code} with an error body nested too deeply.",
            status_code=response.status_code,
        ) from exc
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


def _is_outage(status: int) -> bool:
    return status >= 500 or status == 429


def _too_large(response: requests.Response, limit: int) -> KeyrunesProtocolError:
    return KeyrunesProtocolError(
        f"Keyrunes answered with a body larger than {limit} bytes (MAX_RESPONSE_BYTES).",
        status_code=response.status_code,
    )


class _Outage(Exception):
    """One attempt failed in a way worth retrying: the error to raise if it is the last."""

    def __init__(self, error: KeyrunesUnavailable, response: requests.Response | None) -> None:
        super().__init__(error.message)
        self.error = error
        self.response = response


@dataclass
class _Call:
    """One call to Keyrunes: what it asks for and what it may spend."""

    method: str
    path: str
    seconds: float
    deadline: float  # a time.monotonic() value
    max_bytes: int
    stream: bool
    accept_status: frozenset[int]
    no_retry_status: frozenset[int] = frozenset()

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def accepts(self, status: int) -> bool:
        return 200 <= status < 300 or status in self.accept_status

    def missed_deadline(self) -> KeyrunesUnavailable:
        return KeyrunesUnavailable(
            f"Keyrunes did not answer {self.method} {self.path} within the "
            f"{self.seconds:g} s deadline."
        )


_ID_SEGMENT = re.compile(r"/\d+(?=/|$)")


def operation_name(path: str) -> str:
    """A route's short, bounded name for metrics: ``/api/admin/users/7`` -> ``admin/users/{id}``."""
    name = path.split("?", 1)[0]
    name = name[len("/api/") :] if name.startswith("/api/") else name.lstrip("/")
    return _ID_SEGMENT.sub("/{id}", "/" + name)[1:] or "root"


def _report_call(path: str, status: int | None, started: float) -> None:
    if status is None or status >= 500:
        outcome = "error"
    elif status >= 400:
        outcome = "refused"
    else:
        outcome = "ok"
    signals.remote_call.send(
        sender=KeyrunesClient,
        operation=operation_name(path),
        outcome=outcome,
        status_code=status,
        duration=time.monotonic() - started,
    )


class KeyrunesClient:
    """A thread-safe client for one Keyrunes server.

    :param base_url: root of the server, e.g. ``https://auth.example.com``.
    :param timeout: seconds per socket operation, a number or a ``(connect,
        read)`` pair; never None.
    :param retries: extra attempts for idempotent requests.
    :param backoff: first retry delay in seconds, doubled on each retry.
    :param deadline: seconds one call may take in all, retries included.
    :param max_response_bytes: largest body accepted, counted after decompression.
    :param verify_ssl: passed to requests as ``verify`` (a bool or a CA bundle path).
    :param organization_key: default ``X-Organization-Key`` for the org-key routes.
    :param namespace: default namespace for login, register and the password flows.
    :param breaker: the circuit breaker to consult; None means the process-wide
        one (:func:`keyrunes_django.breaker.get_breaker`), looked up per call.
    :param session: a requests session to use instead of the client's own;
        without the client's adapter, the deadline is then enforced only
        between socket operations and body chunks.
    """

    def __init__(
        self,
        base_url: str,
        *,
        timeout: Timeout = DEFAULT_TIMEOUT,
        retries: int = 2,
        backoff: float = 0.25,
        deadline: float = DEFAULT_DEADLINE,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        verify_ssl: bool | str = True,
        organization_key: str | None = None,
        namespace: str = "public",
        max_retry_after: float = DEFAULT_MAX_RETRY_AFTER,
        pool_maxsize: int = 20,
        breaker: CircuitBreaker | None = None,
        session: requests.Session | None = None,
    ) -> None:
        if not base_url or not isinstance(base_url, str):
            raise ImproperlyConfigured("KeyrunesClient needs a base_url.")
        self.base_url = base_url.rstrip("/")
        self.timeout = normalise_timeout(timeout)
        self.retries = max(0, int(retries))
        self.backoff = max(0.0, float(backoff))
        self.deadline = normalise_deadline(deadline)
        self.max_response_bytes = normalise_max_bytes(max_response_bytes)
        self.max_retry_after = max(0.0, float(max_retry_after))
        self.verify_ssl = verify_ssl
        self.organization_key = organization_key
        self.namespace = namespace
        self._own_breaker = breaker
        #: After a cool-down, send the breaker's probe (a GET or HEAD) from
        #: a background thread and answer its caller at once (see _probe_in_background).
        self.probe_in_background = True
        #: The last background probe (tests and shutdown may join it).
        self.probe_thread: threading.Thread | None = None
        # Overridable in tests so backoff can be observed without sleeping.
        self.sleep: Callable[[float], None] = time.sleep
        if session is None:
            session = requests.Session()
            # Retries are ours (they must know the route); urllib3 makes none.
            adapter = DeadlineAdapter(pool_connections=4, pool_maxsize=pool_maxsize, max_retries=0)
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
            deadline=s.DEADLINE,
            max_response_bytes=s.MAX_RESPONSE_BYTES,
            verify_ssl=s.VERIFY_SSL,
            organization_key=s.ORGANIZATION_KEY,
            namespace=str(s.NAMESPACE),
        )

    @property
    def breaker(self) -> CircuitBreaker:
        """The circuit breaker this client's calls go through."""
        return self._own_breaker if self._own_breaker is not None else get_breaker()

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
        delay = self.backoff * (2.0 ** min(attempt, 64))
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
        stream: bool = False,
        max_bytes: int | None = None,
        deadline: float | None = None,
    ) -> requests.Response:
        """Send one request (with retries as allowed) and map failures to exceptions.

        Returns the response when its status is 2xx or in ``accept_status``.
        ``no_retry_status`` are 5xx statuses that are this route's definite
        answer: neither retried nor counted by the circuit breaker. When the
        breaker's cool-down is over, a GET or HEAD that would be its probe is
        sent from a background thread and this call raises
        :class:`CircuitOpen` at once (``retry_after`` 1 s).

        The body is read at once (``response.content``), refused past
        ``max_bytes`` (default ``MAX_RESPONSE_BYTES``). With ``stream=True`` an
        accepted response comes back unread: read it with :meth:`iter_body`
        (decompressed chunks, still under this call's deadline, ``max_bytes``
        applied only if given there) and close it. Pass a longer ``deadline``
        (seconds) for a large listing: it bounds the body read too.
        """
        seconds = self.deadline if deadline is None else normalise_deadline(deadline)
        call = _Call(
            method=method.upper(),
            path=path,
            seconds=seconds,
            deadline=time.monotonic() + seconds,
            max_bytes=(
                self.max_response_bytes if max_bytes is None else normalise_max_bytes(max_bytes)
            ),
            stream=stream,
            accept_status=accept_status,
            no_retry_status=no_retry_status,
        )
        if retry is None:
            retry = call.method in IDEMPOTENT_METHODS
        attempts = 1 + (self.retries if retry else 0)
        clean_params = {k: v for k, v in (params or {}).items() if v is not None} or None
        breaker = self.breaker
        for attempt in range(attempts):
            try:
                return self._attempt(call, breaker, dict(headers or {}), json, clean_params)
            except _Outage as outage:
                self._retry_or_raise(call, breaker, attempt, attempts, outage)
        raise AssertionError("unreachable")  # pragma: no cover

    def _attempt(
        self,
        call: _Call,
        breaker: CircuitBreaker,
        headers: dict[str, str],
        json: Any,
        params: Mapping[str, Any] | None,
    ) -> requests.Response:
        """One attempt with the breaker's leave; :class:`_Outage` when worth retrying."""
        permit = breaker.acquire(call.remaining())
        if permit.probe and self.probe_in_background and call.method in SAFE_METHODS:
            self._probe_in_background(
                lambda: self._attempt_with(permit, call, headers, json, params)
            )
        return self._attempt_with(permit, call, headers, json, params)

    def _probe_in_background(self, probe: Callable[[], requests.Response]) -> NoReturn:
        """Send the breaker's probe from a thread of its own; the caller gets 503 at once.

        After a cool-down Keyrunes may still be down or slow: a request that
        became the probe would wait up to a whole deadline, holding a sync
        worker meanwhile. The probe's outcome closes or reopens the breaker
        for the next callers; its answer is dropped.
        """

        def run() -> None:
            try:
                response = probe()
            except Exception:  # the outcome is the permit's report
                return
            response.close()

        thread = threading.Thread(target=run, name="keyrunes-breaker-probe", daemon=True)
        self.probe_thread = thread
        thread.start()
        raise CircuitOpen(
            "Keyrunes circuit breaker is half_open: a probe call is under way; no call made.",
            retry_after=PROBE_RETRY_AFTER,
        )

    def _attempt_with(
        self,
        permit: Permit,
        call: _Call,
        headers: dict[str, str],
        json: Any,
        params: Mapping[str, Any] | None,
    ) -> requests.Response:
        """The attempt itself, under ``permit``, whose outcome it reports to the breaker."""
        try:
            response = self._send(call, headers, json, params)
        except _Outage:
            permit.failed(trip=call.remaining() <= 0)
            raise
        except KeyrunesProtocolError:
            permit.succeeded()  # the server answered, wrongly but promptly
            raise
        except BaseException:
            permit.release()
            raise
        status = response.status_code
        if _is_outage(status) and status not in call.no_retry_status:
            permit.failed()
            if call.accepts(status):
                return response
            error = self._error_for(response)
            assert isinstance(error, KeyrunesUnavailable)
            raise _Outage(error, response)
        permit.succeeded()
        if call.accepts(status):
            return response
        raise self._error_for(response)

    def _retry_or_raise(
        self,
        call: _Call,
        breaker: CircuitBreaker,
        attempt: int,
        attempts: int,
        outage: _Outage,
    ) -> None:
        """Sleep before the next attempt, or raise the outage's error when there is none."""
        error = outage.error
        delay = self._delay(attempt, outage.response)
        if attempt < attempts - 1 and breaker.state == CLOSED and delay < call.remaining():
            logger.warning(
                "Keyrunes %s %s: %s; retry %d/%d in %.2fs",
                call.method, call.path, error, attempt + 1, attempts - 1, delay,
            )  # fmt: skip
            self.sleep(delay)
            return
        if error.retry_after is None and breaker.state != CLOSED:
            error.retry_after = breaker.retry_after()
        logger.warning("Keyrunes %s %s: %s", call.method, call.path, error)
        raise error

    def _send(
        self,
        call: _Call,
        headers: dict[str, str],
        json: Any,
        params: Mapping[str, Any] | None,
    ) -> requests.Response:
        """One attempt: send, and read the body unless the caller streams it."""
        remaining = call.remaining()
        if remaining <= 0:
            raise _Outage(call.missed_deadline(), None)
        connect, read = self.timeout
        started = time.monotonic()
        token = _BUDGET.set(_Budget(call.deadline, read))
        try:
            response = self.session.request(
                call.method,
                self.base_url + call.path,
                headers=headers,
                json=json,
                params=params,
                timeout=(min(connect, remaining), min(read, remaining)),
                verify=self.verify_ssl,
                allow_redirects=False,
                stream=True,
            )
        except (requests.ConnectionError, requests.Timeout) as exc:
            _report_call(call.path, None, started)
            raise _Outage(self._transport_error(call, exc), None) from exc
        except requests.RequestException as exc:
            _report_call(call.path, None, started)
            raise KeyrunesProtocolError(
                f"Request to Keyrunes failed: {type(exc).__name__}"
            ) from exc
        finally:
            _BUDGET.reset(token)
        # iter_body reads a streamed body later, under this call's deadline.
        response.keyrunes_deadline = (call.deadline, call.seconds)  # type: ignore[attr-defined]
        if not (call.stream and call.accepts(response.status_code)):
            self._read_body(response, call)
        logger.debug(
            "Keyrunes %s %s -> %d in %.0fms",
            call.method, call.path, response.status_code, (time.monotonic() - started) * 1000,
        )  # fmt: skip
        _report_call(call.path, response.status_code, started)
        return response

    @staticmethod
    def _transport_error(call: _Call, exc: Exception) -> KeyrunesUnavailable:
        if call.remaining() <= 0:
            return call.missed_deadline()
        kind = "timed out" if isinstance(exc, requests.Timeout) else "unreachable"
        return KeyrunesUnavailable(f"Keyrunes {kind}: {type(exc).__name__}")

    def _read_body(self, response: requests.Response, call: _Call) -> None:
        """Read the whole body into ``response.content``, within the call's limits."""
        try:
            declared = response.headers.get("Content-Length", "").strip()
            encoding = response.headers.get("Content-Encoding", "").strip().lower()
            plain = encoding in ("", "identity")
            if plain and declared.isdigit() and int(declared) > call.max_bytes:
                raise _too_large(response, call.max_bytes)
            chunks = list(self._chunks(response, call.max_bytes, call))
            response._content = b"".join(chunks)
            response._content_consumed = True  # type: ignore[attr-defined]
        finally:
            response.close()

    def iter_body(
        self, response: requests.Response, *, max_bytes: int | None = None
    ) -> Iterator[bytes]:
        """The body of a response from ``request(..., stream=True)``, in decompressed chunks.

        Reading stays under the deadline of the call that made the response.
        Raises :class:`KeyrunesProtocolError` past ``max_bytes`` (None: no
        limit) or for a body that does not decompress, and
        :class:`KeyrunesUnavailable` when the connection breaks or the deadline
        passes. Close the response when done (``with response:``).
        """
        deadline, seconds = getattr(response, "keyrunes_deadline", (math.inf, math.inf))
        call = _Call(
            method=response.request.method or "GET",
            path=response.request.path_url,
            seconds=seconds,
            deadline=deadline,
            max_bytes=max_bytes if max_bytes is not None else 0,
            stream=True,
            accept_status=frozenset(),
        )
        try:
            yield from self._chunks(response, max_bytes, call)
        except _Outage as outage:
            raise outage.error from outage.__cause__

    @staticmethod
    def _chunks(response: requests.Response, max_bytes: int | None, call: _Call) -> Iterator[bytes]:
        size = 0
        try:
            for chunk in response.iter_content(_CHUNK_BYTES):
                size += len(chunk)
                if max_bytes is not None and size > max_bytes:
                    raise _too_large(response, max_bytes)
                if call.remaining() <= 0:
                    raise _Outage(call.missed_deadline(), None)
                yield chunk
        except requests.exceptions.ContentDecodingError as exc:
            raise KeyrunesProtocolError(
                "Keyrunes answered with a body that does not decompress.",
                status_code=response.status_code,
            ) from exc
        except (
            requests.ConnectionError,
            requests.Timeout,
            requests.exceptions.ChunkedEncodingError,
        ) as exc:
            raise _Outage(KeyrunesClient._transport_error(call, exc), None) from exc

    @staticmethod
    def _error_for(response: requests.Response) -> KeyrunesError:
        """The exception for an answer that is not accepted."""
        status = response.status_code
        message, body = _error_message(response)
        if 300 <= status < 400:
            return KeyrunesProtocolError(
                f"Keyrunes answered with a redirect: {message}", status_code=status, body=None
            )
        if _is_outage(status):
            return KeyrunesUnavailable(
                message, status_code=status, body=body, retry_after=_retry_after(response)
            )
        cls: type[KeyrunesHTTPError] = {
            401: AuthenticationFailed,
            403: PermissionDenied,
            404: NotFound,
            400: ValidationFailed,
            422: ValidationFailed,
        }.get(status, KeyrunesHTTPError)
        if 400 <= status < 500:
            return cls(message, status_code=status, body=body)
        return KeyrunesProtocolError(  # 1xx and other oddities
            f"Unexpected HTTP status: {message}", status_code=status, body=body
        )

    @staticmethod
    def _json(response: requests.Response) -> Any:
        try:
            return load_json(response.content or b"")
        except _TooDeep as exc:
            raise KeyrunesProtocolError(
                f"Keyrunes answered with JSON nested deeper than {MAX_JSON_DEPTH} levels.",
                status_code=response.status_code,
            ) from exc
        except ValueError as exc:
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
        version's defect for a valid key; not a failure for the breaker).
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

    #: Largest user listing :meth:`iter_users` reads (decoded bytes): about a million users.
    USER_LISTING_MAX_BYTES = 256 * 1024 * 1024
    #: Seconds the whole user listing may take (a sync, not a request, waits for it).
    USER_LISTING_DEADLINE = 600.0

    def iter_users(
        self, token: str, org_id: int | None = None, *, max_bytes: int | None = None
    ) -> Iterator[AdminUser]:
        """``GET /api/admin/users`` parsed incrementally: users come out as the body is read.

        The request is sent (and failures raised) at once; the returned iterator
        parses the body with ijson chunk by chunk, so memory does not grow with
        the listing. A body that is not a JSON array, an invalid element, or one
        larger than ``max_bytes`` (default :attr:`USER_LISTING_MAX_BYTES`) raises
        :class:`KeyrunesProtocolError` while iterating.
        """
        import ijson  # type: ignore[import-untyped]

        limit = self.USER_LISTING_MAX_BYTES if max_bytes is None else max_bytes
        response = self.request(
            "GET",
            "/api/admin/users",
            headers=self._bearer(token),
            params={"org_id": org_id},
            stream=True,
            deadline=self.USER_LISTING_DEADLINE,
        )

        def users() -> Iterator[AdminUser]:
            parsed: list[Any] = ijson.sendable_list()
            parser = ijson.items_coro(parsed, "item", use_float=True)
            opened = False
            try:
                for chunk in self.iter_body(response, max_bytes=limit):
                    start = b"" if opened else chunk.lstrip()[:1]
                    if start not in (b"[", b""):
                        raise KeyrunesProtocolError("The user listing is not a JSON array.")
                    opened = opened or start == b"["
                    parser.send(chunk)
                    yield from (AdminUser.model_validate(item) for item in parsed)
                    del parsed[:]
                parser.close()
                yield from (AdminUser.model_validate(item) for item in parsed)
            except ijson.JSONError as exc:
                raise KeyrunesProtocolError(f"The user listing is not valid JSON: {exc}") from exc
            except PydanticValidationError as exc:
                raise KeyrunesProtocolError(
                    f"Unexpected AdminUser from Keyrunes: {_validation_summary(exc)}"
                ) from exc
            finally:
                response.close()

        return users()

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
        repr(s.DEADLINE),
        repr(s.MAX_RESPONSE_BYTES),
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
            if _fingerprint is not None:
                # Another server or other limits: past failures say nothing now.
                reset_breaker()
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
        reset_breaker()


def _connect_signals() -> None:
    from django.core.signals import setting_changed

    setting_changed.connect(_on_setting_changed, dispatch_uid="keyrunes_django.client.reset")


_connect_signals()

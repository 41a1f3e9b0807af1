"""In-process Keyrunes emulator: Werkzeug's threaded server on a free loopback port.

Seed files (``seed=`` here, ``--seed`` on the command line) are JSON objects with
these optional lists, applied in this order::

    {
      "organizations": [{"name": "Acme", "namespace": "acme", "description": null,
                         "base_url": null, "secret_key": "<uuid, optional>"}],
      "groups":   [{"name": "developers", "namespace": "public", "description": "Dev team"}],
      "policies": [{"name": "docs_read", "namespace": "public", "resource": "docs:*",
                    "action": "read", "effect": "Allow", "description": null,
                    "groups": ["developers"], "users": ["alice"]}],
      "users":    [{"email": "alice@example.com", "username": "alice", "password": "Secret123",
                    "namespace": "public", "groups": ["users"], "first_login": false,
                    "organization_id": null}],
      "memberships": [{"user": "alice", "group": "developers", "namespace": "public"}]
    }

Organizations get the groups ``admin`` and ``users`` as on the server; a
policy's ``users`` (usernames) are attached once the users exist. ``namespace``
defaults to ``"public"`` everywhere; ``username`` defaults to the email's local part.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
import socket
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from os import PathLike
from types import TracebackType
from typing import Any

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from keyrunes_django.testing import factories
from keyrunes_django.testing.app import (
    DEFAULT_JWT_SECRET,
    ISSUER,
    TOKEN_LIFETIME,
    KeyrunesApp,
    encode_jwt,
)
from keyrunes_django.testing.faults import FaultInjector, RequestLog, RequestRecord
from keyrunes_django.testing.state import (
    DEFAULT_NAMESPACE,
    EmulatorError,
    GroupRecord,
    Namespace,
    OrganizationRecord,
    PolicyRecord,
    State,
    UserRecord,
)

__all__ = [
    "EmulatedGroup",
    "EmulatedOrganization",
    "EmulatedPolicy",
    "EmulatedUser",
    "KeyrunesEmulator",
    "build_state",
]

logger = logging.getLogger(__name__)

SeedData = Mapping[str, Any]


@dataclass(frozen=True)
class EmulatedUser:
    user_id: int
    username: str
    email: str
    password: str | None
    namespace: str
    organization_id: int
    groups: tuple[str, ...]
    external_id: str


@dataclass(frozen=True)
class EmulatedOrganization:
    organization_id: int
    name: str
    namespace: str
    secret_key: str


@dataclass(frozen=True)
class EmulatedGroup:
    group_id: int
    name: str
    namespace: str
    organization_id: int
    external_id: str


@dataclass(frozen=True)
class EmulatedPolicy:
    policy_id: int
    name: str
    resource: str
    action: str
    effect: str
    namespace: str
    organization_id: int
    external_id: str


def _emulated_user(ns: Namespace, user: UserRecord, password: str | None) -> EmulatedUser:
    return EmulatedUser(
        user_id=user.user_id,
        username=user.username,
        email=user.email,
        password=password,
        namespace=ns.name,
        organization_id=user.organization_id,
        groups=tuple(ns.group_names(user.user_id)),
        external_id=user.external_id,
    )


def _emulated_org(org: OrganizationRecord) -> EmulatedOrganization:
    return EmulatedOrganization(org.organization_id, org.name, org.namespace, org.secret_key)


def _emulated_group(ns: Namespace, group: GroupRecord) -> EmulatedGroup:
    return EmulatedGroup(
        group.group_id, group.name, ns.name, group.organization_id, group.external_id
    )


def _emulated_policy(ns: Namespace, policy: PolicyRecord) -> EmulatedPolicy:
    return EmulatedPolicy(
        policy.policy_id,
        policy.name,
        policy.resource,
        policy.action,
        policy.effect,
        ns.name,
        policy.organization_id,
        policy.external_id,
    )


def _org_of(state: State, ns: Namespace) -> int:
    org = state.organization_by_namespace(ns.name)
    if org is None:  # pragma: no cover - namespaces always belong to an organization
        raise EmulatorError(f"no organization owns namespace {ns.name!r}")
    return org.organization_id


def _add_user(
    state: State,
    *,
    email: str,
    password: str,
    username: str | None = None,
    namespace: str = DEFAULT_NAMESPACE,
    organization_id: int | None = None,
    groups: Iterable[str] = ("users",),
    first_login: bool = False,
) -> UserRecord:
    ns = state.namespace(namespace)
    org_id = organization_id if organization_id is not None else _org_of(state, ns)
    return state.create_user(
        ns,
        organization_id=org_id,
        email=email,
        username=username or email.split("@", 1)[0],
        password=password,
        groups=groups,
        first_login=first_login,
        # Helpers may file a user under another organization (to test check-permission's
        # cross-organization refusal) while still using the namespace's groups.
        group_organization_id=_org_of(state, ns),
    )


def build_state(superadmin: tuple[str, ...] | None = None, seed: SeedData | None = None) -> State:
    """The migrations' seed, then the superadmin, then the seed data."""
    state = State.seeded()
    if superadmin is not None:
        email, password, *rest = superadmin
        _add_user(
            state,
            email=email,
            password=password,
            username=rest[0] if rest else None,
            groups=("superadmin", "users"),
        )
    if seed:
        _apply_seed(state, seed)
    return state


def _apply_seed(state: State, seed: SeedData) -> None:
    for org in seed.get("organizations", ()):
        state.create_organization(
            org["name"],
            org["namespace"],
            description=org.get("description"),
            base_url=org.get("base_url"),
            secret_key=org.get("secret_key"),
        )
    for group in seed.get("groups", ()):
        ns = state.namespace(group.get("namespace", DEFAULT_NAMESPACE))
        state.create_group(ns, _org_of(state, ns), group["name"], group.get("description"))
    for policy in seed.get("policies", ()):
        ns = state.namespace(policy.get("namespace", DEFAULT_NAMESPACE))
        state.create_policy(
            ns,
            _org_of(state, ns),
            policy["name"],
            policy["resource"],
            policy["action"],
            policy.get("effect", "Allow"),
            description=policy.get("description"),
            conditions=policy.get("conditions"),
        )
        for group_name in policy.get("groups", ()):
            state.attach_policy(ns, policy["name"], group=group_name)
    for user in seed.get("users", ()):
        _add_user(
            state,
            email=user["email"],
            password=user["password"],
            username=user.get("username"),
            namespace=user.get("namespace", DEFAULT_NAMESPACE),
            organization_id=user.get("organization_id"),
            groups=user.get("groups", ("users",)),
            first_login=bool(user.get("first_login", False)),
        )
    for membership in seed.get("memberships", ()):
        ns = state.namespace(membership.get("namespace", DEFAULT_NAMESPACE))
        member = ns.user_by_username(membership["user"]) or ns.user_by_email(membership["user"])
        group = ns.group_by_name(membership["group"])
        if member is None or group is None:
            raise EmulatorError(f"seed membership refers to an unknown user or group: {membership}")
        state.add_membership(ns, member.user_id, group.group_id)
    for policy in seed.get("policies", ()):
        ns = state.namespace(policy.get("namespace", DEFAULT_NAMESPACE))
        for username in policy.get("users", ()):
            member = ns.user_by_username(username) or ns.user_by_email(username)
            if member is None:
                raise EmulatorError(
                    f"seed policy {policy['name']!r} names unknown user {username!r}"
                )
            state.attach_policy(ns, policy["name"], user_id=member.user_id)


def load_seed(path: str | PathLike[str]) -> dict[str, Any]:
    with open(path, encoding="utf-8") as fh:
        data = json.load(fh)
    if not isinstance(data, dict):
        raise ValueError("a seed file holds a JSON object")
    return data


class _QuietHandler(WSGIRequestHandler):
    """HTTP/1.1 with keep-alive, as hyper serves the real server.

    Werkzeug's own handler closes every connection; this one reads each request
    body completely, answers with a ``Content-Length`` and keeps the connection
    open unless the client asks to close it. No access log on stderr.
    """

    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in one write; no Nagle delay on a kept-alive socket.
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def run_wsgi(self) -> None:
        environ = self.make_environ()
        # http.server collapses a leading "//" in self.path; routing needs the target as sent.
        words = self.requestline.split()
        if len(words) == 3:
            environ["REQUEST_URI"] = environ["RAW_URI"] = words[1]
        body = self._read_body()
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        # The body is complete (a chunked one is decoded already): read it to its end.
        environ["wsgi.input_terminated"] = True
        app = self.server.app
        started: list[Any] = []

        def start_response(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Any:
            started[:] = [status, headers]
            return lambda data: None

        try:
            result = app(environ, start_response)
            try:
                data = b"".join(result)
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
        except ConnectionError:
            self.close_connection = True
            return
        except Exception:  # a bug in the emulator: answer like a crashed handler
            logger.exception("keyrunes emulator: unhandled error")
            self.close_connection = True
            started = ["500 Internal Server Error", [("Content-Type", "text/plain")]]
            data = b"Internal Server Error"
        self._send(started[0], started[1], data, environ["REQUEST_METHOD"])

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = self.headers.get("Content-Length")
        return self.rfile.read(int(length)) if length and length.isdigit() else b""

    def _send(self, status: str, headers: list[tuple[str, str]], data: bytes, method: str) -> None:
        code_text, _, reason = status.partition(" ")
        code = int(code_text)
        self.send_response_only(code, reason)
        self.send_header("Date", self.date_time_string())
        names = {name.lower() for name, _ in headers}
        for name, value in headers:
            self.send_header(name, value)
        bodyless = code in (204, 304) or 100 <= code < 200
        if "content-length" not in names and not bodyless:
            self.send_header("Content-Length", str(len(data)))
        if self.headers.get("Connection", "").lower() == "close":
            self.close_connection = True
            self.send_header("Connection", "close")
        self._headers_buffer.append(b"\r\n")
        if method != "HEAD" and not bodyless:
            self._headers_buffer.append(data)
        self.flush_headers()

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass

    def log(self, type: str, message: str, *args: Any) -> None:
        logger.debug(message, *args)


class KeyrunesEmulator:
    """The Keyrunes HTTP API on ``base_url``, with direct helpers for test setup.

    ``superadmin`` is ``(email, password)`` or ``(email, password, username)``;
    the account lives in organization 1, namespace ``public``, groups
    ``superadmin`` and ``users``. ``seed`` is a mapping or a path to a JSON seed
    file (see the module docstring). ``server_quirks`` reproduces the defects of
    server 0.2.0 (expired tokens accepted, verify-org-key's 500, no policy checks
    in tenants); it can also be flipped on a running emulator.
    """

    def __init__(
        self,
        jwt_secret: str = DEFAULT_JWT_SECRET,
        superadmin: tuple[str, ...] | None = None,
        server_quirks: bool = False,
        *,
        seed: SeedData | str | PathLike[str] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.jwt_secret = jwt_secret
        self.superadmin = tuple(superadmin) if superadmin is not None else None
        self.default_server_quirks = server_quirks
        self.seed: SeedData | None = load_seed(seed) if isinstance(seed, (str, PathLike)) else seed
        self.host = host
        self.port = port
        self.faults = FaultInjector()
        self.request_log_store = RequestLog()
        self.app = KeyrunesApp(
            build_state(self.superadmin, self.seed),
            jwt_secret=jwt_secret,
            server_quirks=server_quirks,
            faults=self.faults,
            request_log=self.request_log_store,
        )
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> KeyrunesEmulator:
        if self._server is not None:
            return self
        server = make_server(
            self.host, self.port, self.app, threaded=True, request_handler=_QuietHandler
        )
        server.daemon_threads = True  # type: ignore[attr-defined]
        self._server = server
        self.port = server.server_port
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"keyrunes-emulator:{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> KeyrunesEmulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("the emulator is not running; use it as a context manager")
        host = self.host if ":" not in self.host else f"[{self.host}]"
        return f"http://{host}:{self.port}"

    @property
    def state(self) -> State:
        return self.app.state

    @property
    def server_quirks(self) -> bool:
        return self.app.server_quirks

    @server_quirks.setter
    def server_quirks(self, value: bool) -> None:
        self.app.server_quirks = value

    def reset(self) -> None:
        """State back to the seed; also clears faults and counters and restores quirks."""
        self.app.state = build_state(self.superadmin, self.seed)
        self.app.server_quirks = self.default_server_quirks
        self.faults.clear()
        self.reset_counters()

    # -- accounting --------------------------------------------------------

    @property
    def request_log(self) -> list[RequestRecord]:
        return self.request_log_store.records

    def requests_to(self, path_or_regex: str | re.Pattern[str], method: str | None = None) -> int:
        """How many requests hit a path (exact, or a regex matching the whole path)."""
        return self.request_log_store.count(path_or_regex, method)

    def request_counts(self) -> dict[str, int]:
        """Requests per route, keyed ``"METHOD /route/<param>"`` (unknown paths by path)."""
        return self.request_log_store.by_route()

    def reset_counters(self) -> None:
        self.request_log_store.clear()

    # -- direct helpers (no HTTP round trip) -------------------------------

    def create_user(
        self,
        username: str | None = None,
        email: str | None = None,
        password: str | None = None,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        organization_id: int | None = None,
        groups: Iterable[str] = ("users",),
        first_login: bool = False,
    ) -> EmulatedUser:
        username = username or factories.unique_username()
        email = email or factories.unique_email()
        password = password or factories.strong_password()
        with self.state.lock:
            user = _add_user(
                self.state,
                email=email,
                password=password,
                username=username,
                namespace=namespace,
                organization_id=organization_id,
                groups=tuple(groups),
                first_login=first_login,
            )
            return _emulated_user(self.state.namespace(namespace), user, password)

    def get_user(self, user_id: int, namespace: str = DEFAULT_NAMESPACE) -> EmulatedUser | None:
        """The user's current record (``password`` is None: only hashes are stored)."""
        with self.state.lock:
            ns = self.state.namespace(namespace)
            user = ns.users.get(user_id)
            return _emulated_user(ns, user, None) if user is not None else None

    def user_groups(self, user: EmulatedUser) -> tuple[str, ...]:
        with self.state.lock:
            return tuple(self.state.namespace(user.namespace).group_names(user.user_id))

    def delete_user(self, user: EmulatedUser) -> None:
        with self.state.lock:
            self.state.delete_user(self.state.namespace(user.namespace), user.user_id)

    def create_group(
        self, name: str, *, namespace: str = DEFAULT_NAMESPACE, description: str | None = None
    ) -> EmulatedGroup:
        with self.state.lock:
            ns = self.state.namespace(namespace)
            return _emulated_group(
                ns, self.state.create_group(ns, _org_of(self.state, ns), name, description)
            )

    def create_policy(
        self,
        name: str,
        resource: str,
        action: str,
        effect: str = "Allow",
        *,
        namespace: str = DEFAULT_NAMESPACE,
        description: str | None = None,
        conditions: Any = None,
    ) -> EmulatedPolicy:
        with self.state.lock:
            ns = self.state.namespace(namespace)
            policy = self.state.create_policy(
                ns,
                _org_of(self.state, ns),
                name,
                resource,
                action,
                effect,
                description=description,
                conditions=conditions,
            )
            return _emulated_policy(ns, policy)

    def attach_policy(
        self,
        policy_name: str,
        *,
        group: str | None = None,
        user: EmulatedUser | int | None = None,
        namespace: str = DEFAULT_NAMESPACE,
    ) -> None:
        """Attach a policy to a group (by name) or a user, as the server does outside its API."""
        user_id = user.user_id if isinstance(user, EmulatedUser) else user
        if isinstance(user, EmulatedUser):
            namespace = user.namespace
        with self.state.lock:
            self.state.attach_policy(
                self.state.namespace(namespace), policy_name, group=group, user_id=user_id
            )

    def _group(self, ns: Namespace, name: str) -> GroupRecord:
        group = ns.group_by_name(name)
        if group is None:
            raise EmulatorError(f"group not found: {name}", "not_found")
        return group

    def add_to_group(self, user: EmulatedUser, group_name: str) -> None:
        with self.state.lock:
            ns = self.state.namespace(user.namespace)
            self.state.add_membership(ns, user.user_id, self._group(ns, group_name).group_id)

    def remove_from_group(self, user: EmulatedUser, group_name: str) -> None:
        with self.state.lock:
            ns = self.state.namespace(user.namespace)
            self.state.remove_membership(ns, user.user_id, self._group(ns, group_name).group_id)

    def is_allowed(self, user: EmulatedUser, resource: str, action: str) -> bool:
        """The policy decision for ``user`` (what the permission routes answer)."""
        with self.state.lock:
            return self.state.namespace(user.namespace).is_allowed(user.user_id, resource, action)

    def create_organization(
        self,
        name: str,
        namespace: str,
        *,
        description: str | None = None,
        base_url: str | None = None,
    ) -> EmulatedOrganization:
        return _emulated_org(
            self.state.create_organization(
                name, namespace, description=description, base_url=base_url
            )
        )

    def get_organization(self, organization_id: int) -> EmulatedOrganization | None:
        with self.state.lock:
            org = self.state.organizations.get(organization_id)
            return _emulated_org(org) if org is not None else None

    def organization_key(self, organization_id: int = 1) -> str:
        with self.state.lock:
            org = self.state.organizations.get(organization_id)
            if org is None:
                raise EmulatorError(f"Organization {organization_id} not found", "not_found")
            return org.secret_key

    def rotate_organization_key(self, organization_id: int = 1) -> str:
        self.organization_key(organization_id)
        return self.state.rotate_key(organization_id)

    def issue_token(
        self,
        user: EmulatedUser,
        *,
        lifetime: int = TOKEN_LIFETIME,
        issued_at: int | float | datetime | None = None,
        **claim_overrides: Any,
    ) -> str:
        """A token signed like the server's, with the user's current groups.

        ``claim_overrides`` replace or add claims (e.g. ``groups=[...]``,
        ``namespace="x"``, ``exp=...``); an override of ``None`` removes the
        claim. ``issued_at`` back-dates the token (with ``lifetime`` it makes
        expired tokens).
        """
        groups: list[str] = list(user.groups)
        with self.state.lock:
            ns = self.state.namespaces.get(user.namespace)
            if ns is not None and user.user_id in ns.users:
                groups = ns.group_names(user.user_id)
        if isinstance(issued_at, datetime):
            iat = int(issued_at.timestamp())
        elif issued_at is not None:
            iat = int(issued_at)
        else:
            iat = int(time.time())
        payload: dict[str, Any] = {
            "sub": str(user.user_id),
            "email": user.email,
            "username": user.username,
            "groups": groups,
            "namespace": user.namespace,
            "organization_id": user.organization_id,
            "exp": iat + lifetime,
            "iat": iat,
            "iss": ISSUER,
        }
        payload.update(claim_overrides)
        payload = {key: value for key, value in payload.items() if value is not None}
        return encode_jwt(payload, self.jwt_secret)

    def expired_token(self, user: EmulatedUser, *, age: int = TOKEN_LIFETIME + 60) -> str:
        """A token that expired ``age - 3600`` seconds ago."""
        return self.issue_token(user, issued_at=int(time.time()) - age)

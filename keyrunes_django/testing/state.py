"""Thread-safe in-memory store of the Keyrunes emulator.

It models what the server keeps in PostgreSQL: a global table of organizations,
each owning one namespace (a schema on the server) with its own users, groups,
policies, memberships, policy attachments and reset tokens. Ids come from
per-namespace sequences, as on the server, so user ids collide across
namespaces. Every public method takes the store's lock.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import re
import secrets
import threading
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

__all__ = [
    "DEFAULT_NAMESPACE",
    "DEFAULT_ORGANIZATION_ID",
    "DEFAULT_ORGANIZATION_NAME",
    "EMAIL_RE",
    "MIN_PASSWORD_LENGTH",
    "EmulatorError",
    "GroupRecord",
    "Namespace",
    "OrganizationRecord",
    "PolicyRecord",
    "ResetToken",
    "State",
    "UserRecord",
    "hash_password",
    "timestamp",
    "verify_password",
]

DEFAULT_NAMESPACE = "public"
DEFAULT_ORGANIZATION_ID = 1
DEFAULT_ORGANIZATION_NAME = "Default Organization"
MIN_PASSWORD_LENGTH = 8
#: The server's email rule (``src/domain/user.rs``).
EMAIL_RE = re.compile(r"^[\w.+-]+@[\w-]+\.[\w.-]+$")
RESET_TOKEN_LIFETIME = timedelta(hours=24)
TEMPORARY_PASSWORD_ALPHABET = (
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789)(*&^%$#@!~"
)

# A low cost keeps test suites fast; this store never holds real credentials.
_PBKDF2_ITERATIONS = 1_000


class EmulatorError(Exception):
    """A request the store refuses; ``message`` is the server's error text."""

    def __init__(self, message: str, kind: str = "invalid") -> None:
        super().__init__(message)
        self.message = message
        #: "invalid" (400), "not_found", "conflict", "db" (a database error on the server).
        self.kind = kind


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, _PBKDF2_ITERATIONS)
    return f"pbkdf2_sha256${_PBKDF2_ITERATIONS}${salt.hex()}${digest.hex()}"


def verify_password(password: str, encoded: str) -> bool:
    try:
        _, iterations, salt, digest = encoded.split("$")
        candidate = hashlib.pbkdf2_hmac(
            "sha256", password.encode(), bytes.fromhex(salt), int(iterations)
        )
    except ValueError:
        return False
    return hmac.compare_digest(candidate.hex(), digest)


def now() -> datetime:
    return datetime.now(timezone.utc)


def timestamp(value: datetime) -> str:
    """RFC 3339 in UTC with a ``Z`` suffix and microseconds, like chrono's serde."""
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class UserRecord:
    user_id: int
    external_id: str
    organization_id: int
    email: str
    username: str
    password_hash: str
    first_login: bool
    created_at: datetime
    updated_at: datetime


@dataclass
class GroupRecord:
    group_id: int
    external_id: str
    organization_id: int
    name: str
    description: str | None
    created_at: datetime
    updated_at: datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "group_id": self.group_id,
            "external_id": self.external_id,
            "organization_id": self.organization_id,
            "name": self.name,
            "description": self.description,
            "created_at": timestamp(self.created_at),
            "updated_at": timestamp(self.updated_at),
        }


@dataclass
class PolicyRecord:
    policy_id: int
    external_id: str
    organization_id: int
    name: str
    description: str | None
    resource: str
    action: str
    effect: str  # "Allow" | "Deny"
    conditions: Any
    created_at: datetime
    updated_at: datetime

    def matches(self, resource: str, action: str) -> bool:
        if self.resource == "*" or self.resource == resource:
            resource_ok = True
        else:
            resource_ok = self.resource.endswith("*") and resource.startswith(self.resource[:-1])
        return resource_ok and (self.action == "*" or self.action == action)

    def to_json(self) -> dict[str, Any]:
        return {
            "policy_id": self.policy_id,
            "external_id": self.external_id,
            "organization_id": self.organization_id,
            "name": self.name,
            "description": self.description,
            "resource": self.resource,
            "action": self.action,
            "effect": self.effect,
            "conditions": self.conditions,
            "created_at": timestamp(self.created_at),
            "updated_at": timestamp(self.updated_at),
        }


@dataclass
class OrganizationRecord:
    organization_id: int
    external_id: str
    name: str
    description: str | None
    secret_key: str
    namespace: str
    base_url: str | None
    created_at: datetime
    updated_at: datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "organization_id": self.organization_id,
            "external_id": self.external_id,
            "name": self.name,
            "description": self.description,
            "secret_key": self.secret_key,
            "namespace": self.namespace,
            "base_url": self.base_url,
            "created_at": timestamp(self.created_at),
            "updated_at": timestamp(self.updated_at),
        }


@dataclass
class ResetToken:
    token_hash: str
    user_id: int
    expires_at: datetime
    used: bool = False


@dataclass
class Namespace:
    """One tenant schema: its own rows and its own id sequences."""

    name: str
    users: dict[int, UserRecord] = field(default_factory=dict)
    groups: dict[int, GroupRecord] = field(default_factory=dict)
    policies: dict[int, PolicyRecord] = field(default_factory=dict)
    # user_id -> group ids in assignment order (the order group names come back in).
    memberships: dict[int, list[int]] = field(default_factory=dict)
    group_policies: set[tuple[int, int]] = field(default_factory=set)
    user_policies: set[tuple[int, int]] = field(default_factory=set)
    reset_tokens: dict[str, ResetToken] = field(default_factory=dict)
    user_seq: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    group_seq: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    policy_seq: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def user_by_email(self, email: str) -> UserRecord | None:
        lowered = email.lower()
        return next((u for u in self.users.values() if u.email.lower() == lowered), None)

    def user_by_username(self, username: str) -> UserRecord | None:
        return next((u for u in self.users.values() if u.username == username), None)

    def user_by_identity(self, identity: str) -> UserRecord | None:
        if EMAIL_RE.match(identity):
            return self.user_by_email(identity)
        return self.user_by_username(identity)

    def group_by_name(self, name: str, organization_id: int | None = None) -> GroupRecord | None:
        return next(
            (
                g
                for g in self.groups.values()
                if g.name == name
                and (organization_id is None or g.organization_id == organization_id)
            ),
            None,
        )

    def policy_by_name(self, name: str) -> PolicyRecord | None:
        return next((p for p in self.policies.values() if p.name == name), None)

    def group_names(self, user_id: int) -> list[str]:
        return [
            self.groups[gid].name for gid in self.memberships.get(user_id, []) if gid in self.groups
        ]

    def user_json(self, user: UserRecord) -> dict[str, Any]:
        return {
            "user_id": user.user_id,
            "external_id": user.external_id,
            "email": user.email,
            "username": user.username,
            "groups": self.group_names(user.user_id),
            "first_login": user.first_login,
            "organization_id": user.organization_id,
            "namespace": self.name,
        }

    def admin_user_json(self, user: UserRecord) -> dict[str, Any]:
        return {
            "user_id": user.user_id,
            "external_id": user.external_id,
            "email": user.email,
            "username": user.username,
            "first_login": user.first_login,
            "groups": self.group_names(user.user_id),
            "created_at": timestamp(user.created_at),
        }

    def is_allowed(self, user_id: int, resource: str, action: str) -> bool:
        """The server's decision: some matching Allow and no matching Deny."""
        policy_ids = {pid for uid, pid in self.user_policies if uid == user_id}
        member_of = set(self.memberships.get(user_id, []))
        policy_ids |= {pid for gid, pid in self.group_policies if gid in member_of}
        matching = [
            self.policies[pid]
            for pid in policy_ids
            if pid in self.policies and self.policies[pid].matches(resource, action)
        ]
        allowed = any(p.effect == "Allow" for p in matching)
        denied = any(p.effect == "Deny" for p in matching)
        return allowed and not denied


class State:
    """Organizations and namespaces, guarded by one re-entrant lock."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.organizations: dict[int, OrganizationRecord] = {}
        self.namespaces: dict[str, Namespace] = {}
        self._org_seq = itertools.count(1)

    # -- bootstrap ---------------------------------------------------------

    @classmethod
    def seeded(cls) -> State:
        """What the server's migrations leave behind."""
        state = cls()
        org = state.create_organization(DEFAULT_ORGANIZATION_NAME, DEFAULT_NAMESPACE, groups=())
        ns = state.namespaces[org.namespace]
        state.create_group(ns, org.organization_id, "superadmin", "Full system access")
        state.create_group(ns, org.organization_id, "users", "Regular users")
        state.create_policy(
            ns,
            org.organization_id,
            "full_access",
            "*",
            "*",
            "Allow",
            description="Full access to everything",
        )
        state.create_policy(
            ns,
            org.organization_id,
            "read_only",
            "user:*",
            "read",
            "Allow",
            description="Read-only access to users",
        )
        state.create_policy(
            ns,
            org.organization_id,
            "user_self_manage",
            "user:self",
            "*",
            "Allow",
            description="Users can manage themselves",
        )
        state.attach_policy(ns, "full_access", group="superadmin")
        state.attach_policy(ns, "read_only", group="users")
        state.attach_policy(ns, "user_self_manage", group="users")
        return state

    # -- organizations -----------------------------------------------------

    def namespace(self, name: str) -> Namespace:
        with self.lock:
            try:
                return self.namespaces[name]
            except KeyError:
                raise EmulatorError(
                    'error returned from database: relation "users" does not exist', "db"
                ) from None

    def organization_by_namespace(self, namespace: str) -> OrganizationRecord | None:
        with self.lock:
            return next((o for o in self.organizations.values() if o.namespace == namespace), None)

    def organization_by_key(self, key: uuid.UUID) -> OrganizationRecord | None:
        with self.lock:
            for org in self.organizations.values():
                if hmac.compare_digest(uuid.UUID(org.secret_key).bytes, key.bytes):
                    return org
            return None

    def create_organization(
        self,
        name: str,
        namespace: str,
        *,
        description: str | None = None,
        base_url: str | None = None,
        secret_key: str | None = None,
        groups: Iterable[str] = ("admin", "users"),
    ) -> OrganizationRecord:
        with self.lock:
            if not namespace:
                raise EmulatorError(
                    "error returned from database: zero-length delimited identifier", "db"
                )
            if not all(ch.isalnum() or ch == "_" for ch in namespace):
                raise EmulatorError("namespace must be alphanumeric (underscores allowed)")
            if len(name) > 100:
                raise EmulatorError(_too_long(100), "db")
            if len(namespace) > 63:
                raise EmulatorError(_too_long(63), "db")
            if any(o.name == name for o in self.organizations.values()):
                raise EmulatorError("organization already exists")
            if namespace in self.namespaces:
                raise EmulatorError(
                    "error returned from database: duplicate key value violates unique "
                    'constraint "organizations_namespace_key"',
                    "db",
                )
            stamp = now()
            description = description if description and description.strip() else None
            org = OrganizationRecord(
                organization_id=next(self._org_seq),
                external_id=str(uuid.uuid4()),
                name=name,
                description=description,
                secret_key=str(uuid.UUID(secret_key)) if secret_key else str(uuid.uuid4()),
                namespace=namespace,
                base_url=base_url,
                created_at=stamp,
                updated_at=stamp,
            )
            self.organizations[org.organization_id] = org
            ns = Namespace(namespace)
            self.namespaces[namespace] = ns
            for group in groups:
                self.create_group(ns, org.organization_id, group, None)
            return org

    def delete_organization(self, organization_id: int) -> bool:
        with self.lock:
            org = self.organizations.pop(organization_id, None)
            if org is None:
                return False
            ns = self.namespaces.get(org.namespace)
            if ns is not None:
                # Tenant rows cascade through their foreign keys on the server.
                for uid in [
                    u.user_id for u in ns.users.values() if u.organization_id == org.organization_id
                ]:
                    self._drop_user(ns, uid)
                for gid in [
                    g.group_id
                    for g in ns.groups.values()
                    if g.organization_id == org.organization_id
                ]:
                    ns.groups.pop(gid)
                    ns.group_policies = {(g, p) for g, p in ns.group_policies if g != gid}
                for pid in [
                    p.policy_id
                    for p in ns.policies.values()
                    if p.organization_id == org.organization_id
                ]:
                    ns.policies.pop(pid)
                if org.namespace != DEFAULT_NAMESPACE:
                    del self.namespaces[org.namespace]
            return True

    def rotate_key(self, organization_id: int) -> str:
        with self.lock:
            key = str(uuid.uuid4())
            org = self.organizations.get(organization_id)
            if org is not None:
                org.secret_key = key
                org.updated_at = now()
            return key

    # -- users -------------------------------------------------------------

    def create_user(
        self,
        ns: Namespace,
        *,
        organization_id: int,
        email: str,
        username: str,
        password: str,
        groups: Iterable[str],
        first_login: bool,
        group_organization_id: int | None = None,
    ) -> UserRecord:
        """Insert a user and its memberships; group names are resolved first."""
        with self.lock:
            if len(email) > 255:
                raise EmulatorError(_too_long(255), "db")
            if len(username) > 50:
                raise EmulatorError(_too_long(50), "db")
            if ns.user_by_email(email) is not None:
                raise EmulatorError("email already registered", "conflict")
            if ns.user_by_username(username) is not None:
                raise EmulatorError("username taken", "conflict")
            lookup_org = organization_id if group_organization_id is None else group_organization_id
            group_ids: list[int] = []
            for name in groups:
                group = ns.group_by_name(name, lookup_org)
                if group is None:
                    raise EmulatorError(f"invalid group specified: `{name}`")
                if group.group_id not in group_ids:
                    group_ids.append(group.group_id)
            stamp = now()
            user = UserRecord(
                user_id=next(ns.user_seq),
                external_id=str(uuid.uuid4()),
                organization_id=organization_id,
                email=email,
                username=username,
                password_hash=hash_password(password),
                first_login=first_login,
                created_at=stamp,
                updated_at=stamp,
            )
            ns.users[user.user_id] = user
            ns.memberships[user.user_id] = group_ids
            return user

    def update_user(
        self,
        ns: Namespace,
        user_id: int,
        *,
        email: str | None = None,
        username: str | None = None,
        first_login: bool | None = None,
    ) -> UserRecord:
        with self.lock:
            user = ns.users.get(user_id)
            if user is None:
                raise EmulatorError("User not found", "not_found")
            if email is not None:
                if not EMAIL_RE.match(email):
                    raise EmulatorError("invalid email")
                other = ns.user_by_email(email)
                if other is not None and other.user_id != user_id:
                    raise EmulatorError(_unique("users_email_key"), "db")
                if len(email) > 255:
                    raise EmulatorError(_too_long(255), "db")
            if username is not None:
                other = ns.user_by_username(username)
                if other is not None and other.user_id != user_id:
                    raise EmulatorError(_unique("users_username_key"), "db")
                if len(username) > 50:
                    raise EmulatorError(_too_long(50), "db")
            if email is not None:
                user.email = email
            if username is not None:
                user.username = username
            if first_login is not None:
                user.first_login = first_login
            user.updated_at = now()
            return user

    def set_password(
        self, ns: Namespace, user_id: int, password: str, *, first_login: bool | None = None
    ) -> bool:
        with self.lock:
            user = ns.users.get(user_id)
            if user is None:
                return False
            user.password_hash = hash_password(password)
            if first_login is not None:
                user.first_login = first_login
            user.updated_at = now()
            return True

    def delete_user(self, ns: Namespace, user_id: int) -> bool:
        with self.lock:
            return self._drop_user(ns, user_id)

    def _drop_user(self, ns: Namespace, user_id: int) -> bool:
        existed = ns.users.pop(user_id, None) is not None
        ns.memberships.pop(user_id, None)
        ns.user_policies = {(u, p) for u, p in ns.user_policies if u != user_id}
        ns.reset_tokens = {k: t for k, t in ns.reset_tokens.items() if t.user_id != user_id}
        return existed

    # -- groups, policies, memberships ------------------------------------

    def create_group(
        self, ns: Namespace, organization_id: int, name: str, description: str | None
    ) -> GroupRecord:
        with self.lock:
            if len(name) > 100:
                raise EmulatorError(_too_long(100), "db")
            if any(
                g.name == name
                for g in ns.groups.values()
                if g.organization_id == organization_id or ns.name != DEFAULT_NAMESPACE
            ):
                raise EmulatorError("group name already exists", "conflict")
            stamp = now()
            group = GroupRecord(
                group_id=next(ns.group_seq),
                external_id=str(uuid.uuid4()),
                organization_id=organization_id,
                name=name,
                description=description,
                created_at=stamp,
                updated_at=stamp,
            )
            ns.groups[group.group_id] = group
            return group

    def create_policy(
        self,
        ns: Namespace,
        organization_id: int,
        name: str,
        resource: str,
        action: str,
        effect: str = "Allow",
        *,
        description: str | None = None,
        conditions: Any = None,
    ) -> PolicyRecord:
        with self.lock:
            if effect not in ("Allow", "Deny"):
                raise EmulatorError(f"unknown variant `{effect}`, expected `Allow` or `Deny`")
            if not resource:
                raise EmulatorError("resource cannot be empty")
            if not action:
                raise EmulatorError("action cannot be empty")
            for limit, value in ((100, name), (255, resource), (100, action)):
                if len(value) > limit:
                    raise EmulatorError(_too_long(limit), "db")
            if any(
                p.name == name and p.organization_id == organization_id
                for p in ns.policies.values()
            ):
                raise EmulatorError("policy name already exists", "conflict")
            stamp = now()
            policy = PolicyRecord(
                policy_id=next(ns.policy_seq),
                external_id=str(uuid.uuid4()),
                organization_id=organization_id,
                name=name,
                description=description,
                resource=resource,
                action=action,
                effect=effect,
                conditions=conditions,
                created_at=stamp,
                updated_at=stamp,
            )
            ns.policies[policy.policy_id] = policy
            return policy

    def attach_policy(
        self,
        ns: Namespace,
        policy_name: str,
        *,
        group: str | None = None,
        user_id: int | None = None,
    ) -> None:
        with self.lock:
            policy = ns.policy_by_name(policy_name)
            if policy is None:
                raise EmulatorError(f"policy not found: {policy_name}", "not_found")
            if (group is None) == (user_id is None):
                raise EmulatorError("give exactly one of group or user")
            if group is not None:
                record = ns.group_by_name(group)
                if record is None:
                    raise EmulatorError(f"group not found: {group}", "not_found")
                ns.group_policies.add((record.group_id, policy.policy_id))
            else:
                assert user_id is not None
                if user_id not in ns.users:
                    raise EmulatorError("User not found", "not_found")
                ns.user_policies.add((user_id, policy.policy_id))

    def add_membership(self, ns: Namespace, user_id: int, group_id: int) -> None:
        with self.lock:
            if group_id not in ns.groups:
                raise EmulatorError("group not found", "not_found")
            if user_id not in ns.users:
                raise EmulatorError(
                    'error returned from database: insert or update on table "user_groups" '
                    'violates foreign key constraint "user_groups_user_id_fkey"',
                    "db",
                )
            current = ns.memberships.setdefault(user_id, [])
            if group_id not in current:
                current.append(group_id)

    def remove_membership(self, ns: Namespace, user_id: int, group_id: int) -> None:
        with self.lock:
            current = ns.memberships.get(user_id, [])
            if group_id in current:
                current.remove(group_id)

    # -- reset tokens ------------------------------------------------------

    def create_reset_token(self, ns: Namespace, user_id: int) -> str:
        with self.lock:
            token = secrets.token_hex(32)
            ns.reset_tokens[_sha256(token)] = ResetToken(
                token_hash=_sha256(token), user_id=user_id, expires_at=now() + RESET_TOKEN_LIFETIME
            )
            return token

    def consume_reset_token(self, ns: Namespace, token: str) -> int | None:
        """The user id of a valid, unused token (now marked used), else None."""
        with self.lock:
            record = ns.reset_tokens.get(_sha256(token))
            # Deleting a user drops its tokens, so a live record always has its user.
            if record is None or record.used or record.expires_at <= now():
                return None
            record.used = True
            return record.user_id


def temporary_password() -> str:
    return "".join(secrets.choice(TEMPORARY_PASSWORD_ALPHABET) for _ in range(12))


def _sha256(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _too_long(limit: int) -> str:
    return f"error returned from database: value too long for type character varying({limit})"


def _unique(constraint: str) -> str:
    return (
        "error returned from database: duplicate key value violates unique constraint "
        f'"{constraint}"'
    )

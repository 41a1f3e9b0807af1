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
import secrets
import threading
import unicodedata
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from keyrunes_django.testing.serde import EMAIL_RE, MIN_PASSWORD_LENGTH

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
    "collation_key",
    "hash_password",
    "jsonb",
    "timestamp",
    "verify_password",
]

DEFAULT_NAMESPACE = "public"
DEFAULT_ORGANIZATION_ID = 1
DEFAULT_ORGANIZATION_NAME = "Default Organization"
#: Seed rows of the server's migrations
#: (``migrations/20250908121827_create_groups_and_policies.sql:99-109`` and
#: ``migrations/20251228154800_create_organizations_and_multitenancy.sql:21-23``).
DEFAULT_ORGANIZATION_DESCRIPTION = "Default organization for existing data"
SEED_GROUPS = (
    ("superadmin", "Super administrators with full access"),
    ("users", "Regular users"),
)
SEED_POLICIES = (
    ("full_access", "Full access to all resources", "*", "*"),
    ("read_only", "Read-only access to user resources", "user:*", "read"),
    ("user_self_manage", "Users can manage their own data", "user:self", "*"),
)
#: The groups ``create_organization`` adds (``src/services/organization_service.rs:66-88``).
ORGANIZATION_GROUPS = (
    ("admin", "Administrators of the organization"),
    ("users", "Standard users of the organization"),
)
#: PostgreSQL refuses NUL in text values; sqlx passes the error text on.
_ZERO_LENGTH_SCHEMA = (
    'error returned from database: zero-length delimited identifier at or near """"'
)
NUL_ERROR = 'error returned from database: invalid byte sequence for encoding "UTF8": 0x00'
RESET_TOKEN_LIFETIME = timedelta(hours=24)
TEMPORARY_PASSWORD_ALPHABET = (
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789)(*&^%$#@!~"
)

# One salted round: the store holds throwaway test passwords only, and seeding
# thousands of users must stay fast (the cost of a hash is per user).
_PBKDF2_ITERATIONS = 1


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
    """chrono's serde form of a PostgreSQL ``TIMESTAMPTZ``: ``Z`` and the fewest of 0/3/6 digits.

    chrono serializes with ``SecondsFormat::AutoSi``; PostgreSQL keeps microseconds.
    """
    value = value.astimezone(timezone.utc)
    base = value.strftime("%Y-%m-%dT%H:%M:%S")
    micros = value.microsecond
    if micros == 0:
        return f"{base}Z"
    if micros % 1000 == 0:
        return f"{base}.{micros // 1000:03d}Z"
    return f"{base}.{micros:06d}Z"


def collation_key(text: str) -> tuple[Any, ...]:
    """An approximation of PostgreSQL's ``en_US.utf8`` (glibc) ``ORDER BY`` on text.

    Letters compare case- and accent-blind first (``a`` < ``B`` < ``c``), then
    accents, then lower case before upper case; punctuation sorts before digits,
    digits before letters.
    """
    primary: list[tuple[int, str]] = []
    secondary: list[str] = []
    tertiary: list[int] = []
    for char in text:
        decomposed = unicodedata.normalize("NFD", char)
        base, accents = decomposed[0], decomposed[1:]
        lower = base.lower()
        rank = 2 if lower.isalpha() else 1 if lower.isdigit() else 0
        primary.append((rank, lower))
        secondary.append(accents)
        tertiary.append(0 if base == lower else 1)
    return (primary, secondary, tertiary, text)


def jsonb(value: Any) -> Any:
    """What a JSON value reads back as from a ``JSONB`` column.

    JSONB keeps the last of duplicate keys and orders object keys by length,
    then bytewise; the server's serde_json keeps that order.
    """
    if isinstance(value, dict):
        keys = sorted(value, key=lambda k: (len(k.encode()), k.encode()))
        return {k: jsonb(value[k]) for k in keys}
    if isinstance(value, list):
        return [jsonb(v) for v in value]
    return value


def check_text(*values: str | None) -> None:
    """Refuse NUL characters like PostgreSQL does, naming no column."""
    if any(v is not None and "\x00" in v for v in values):
        raise EmulatorError(NUL_ERROR, "db")


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
    # Lookup indexes, as the server's unique indexes make these lookups cheap:
    # lower(email) -> user ids in row order (tenant schemas allow case variants),
    # and username -> user id.
    emails: dict[str, list[int]] = field(default_factory=dict)
    usernames: dict[str, int] = field(default_factory=dict)
    # (user_id, group_id) -> the admin who assigned it (``user_groups.assigned_by``).
    assigners: dict[tuple[int, int], int] = field(default_factory=dict)

    @property
    def is_public(self) -> bool:
        return self.name == DEFAULT_NAMESPACE

    def user_by_email(self, email: str) -> UserRecord | None:
        """``WHERE LOWER(email) = LOWER($1)``: the first matching row."""
        ids = self.emails.get(email.lower())
        return self.users[ids[0]] if ids else None

    def user_by_username(self, username: str) -> UserRecord | None:
        uid = self.usernames.get(username)
        return self.users[uid] if uid is not None else None

    def index_user(self, user: UserRecord) -> None:
        self.emails.setdefault(user.email.lower(), []).append(user.user_id)
        self.usernames[user.username] = user.user_id

    def unindex_user(self, user: UserRecord) -> None:
        ids = self.emails.get(user.email.lower(), [])
        if user.user_id in ids:
            ids.remove(user.user_id)
        if not ids:
            self.emails.pop(user.email.lower(), None)
        if self.usernames.get(user.username) == user.user_id:
            del self.usernames[user.username]

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
        org = state.create_organization(
            DEFAULT_ORGANIZATION_NAME,
            DEFAULT_NAMESPACE,
            description=DEFAULT_ORGANIZATION_DESCRIPTION,
            groups=(),
        )
        ns = state.namespaces[org.namespace]
        for name, description in SEED_GROUPS:
            state.create_group(ns, org.organization_id, name, description)
        for name, description, resource, action in SEED_POLICIES:
            state.create_policy(
                ns, org.organization_id, name, resource, action, "Allow", description=description
            )
        state.attach_policy(ns, "full_access", group="superadmin")
        state.attach_policy(ns, "read_only", group="users")
        state.attach_policy(ns, "user_self_manage", group="users")
        return state

    # -- organizations -----------------------------------------------------

    def namespace(self, name: str) -> Namespace:
        """A schema that exists (it outlives its organization, as on the server)."""
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
        groups: Iterable[tuple[str, str | None] | str] = ORGANIZATION_GROUPS,
    ) -> OrganizationRecord:
        """``OrganizationService::create_organization``, in the server's order of checks.

        The name lookup and the namespace rule come first; then the INSERT
        (which takes an id from the sequence even when it fails), then the
        schema. A schema left by a deleted organization is reused with its
        rows' sequences, as ``CREATE SCHEMA IF NOT EXISTS`` does.
        """
        with self.lock:
            check_text(name)
            if any(o.name == name for o in self.organizations.values()):
                raise EmulatorError("organization already exists")
            if not all(ch.isalnum() or ch == "_" for ch in namespace):
                raise EmulatorError("namespace must be alphanumeric (underscores allowed)")
            organization_id = next(self._org_seq)
            check_text(description, namespace, base_url)
            for limit, value in ((100, name), (63, namespace), (255, base_url)):
                if value is not None and len(value) > limit:
                    raise EmulatorError(_too_long(limit), "db")
            if self.organization_by_namespace(namespace) is not None:
                raise EmulatorError(_unique("organizations_namespace_key"), "db")
            if not namespace:
                raise EmulatorError(_ZERO_LENGTH_SCHEMA, "db")
            stamp = now()
            org = OrganizationRecord(
                organization_id=organization_id,
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
            ns = self.namespaces.setdefault(namespace, Namespace(namespace))
            for group in groups:
                group_name, group_description = (group, None) if isinstance(group, str) else group
                self.create_group(ns, org.organization_id, group_name, group_description)
            return org

    def delete_organization(self, organization_id: int) -> bool:
        """Delete the row; tenant rows cascade, the schema and its sequences stay."""
        with self.lock:
            org = self.organizations.pop(organization_id, None)
            if org is None:
                return False
            ns = self.namespaces.get(org.namespace)
            if ns is not None:
                for uid in [
                    u.user_id for u in ns.users.values() if u.organization_id == org.organization_id
                ]:
                    self._drop_user(ns, uid, cascade=True)
                for gid in [
                    g.group_id
                    for g in ns.groups.values()
                    if g.organization_id == org.organization_id
                ]:
                    ns.groups.pop(gid)
                    ns.group_policies = {(g, p) for g, p in ns.group_policies if g != gid}
                    for member_groups in ns.memberships.values():
                        if gid in member_groups:
                            member_groups.remove(gid)
                    ns.assigners = {k: v for k, v in ns.assigners.items() if k[1] != gid}
                for pid in [
                    p.policy_id
                    for p in ns.policies.values()
                    if p.organization_id == org.organization_id
                ]:
                    ns.policies.pop(pid)
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
        assigned_by: int | None = None,
    ) -> UserRecord:
        """``UserService::create_user``: lookups, group names, the INSERT, then memberships.

        An empty group list means ``users`` (``src/services/user_service.rs:742-744``).
        The memberships are separate statements after the INSERT: when
        ``assigned_by`` names no user the user stays, in no group, and the
        foreign-key error is raised.
        """
        with self.lock:
            check_text(email)
            if ns.user_by_email(email) is not None:
                raise EmulatorError("email already registered", "conflict")
            check_text(username)
            if ns.user_by_username(username) is not None:
                raise EmulatorError("username taken", "conflict")
            lookup_org = organization_id if group_organization_id is None else group_organization_id
            group_ids: list[int] = []
            for name in list(groups) or ["users"]:
                group = None if "\x00" in name else ns.group_by_name(name, lookup_org)
                if group is None:
                    raise EmulatorError(f"invalid group specified: `{name}`")
                if group.group_id not in group_ids:
                    group_ids.append(group.group_id)
            user_id = next(ns.user_seq)
            if len(email) > 255:
                raise EmulatorError(_too_long(255), "db")
            if len(username) > 50:
                raise EmulatorError(_too_long(50), "db")
            stamp = now()
            user = UserRecord(
                user_id=user_id,
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
            ns.index_user(user)
            ns.memberships[user.user_id] = []
            for group_id in group_ids:
                self.add_membership(ns, user.user_id, group_id, assigned_by=assigned_by)
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
        """``update_user``/``update_profile``: the email rule, then one UPDATE of both columns."""
        with self.lock:
            user = ns.users.get(user_id)
            if user is None:
                raise EmulatorError("User not found", "not_found")
            if email is not None and not EMAIL_RE.match(email):
                raise EmulatorError("invalid email")
            new_email = user.email if email is None else email
            new_username = user.username if username is None else username
            check_text(new_email, new_username)
            if len(new_email) > 255:
                raise EmulatorError(_too_long(255), "db")
            if len(new_username) > 50:
                raise EmulatorError(_too_long(50), "db")
            self._check_unique(ns, user_id, new_email, new_username)
            ns.unindex_user(user)
            user.email, user.username = new_email, new_username
            # An UPDATE writes a new row version at the end of the table.
            ns.users[user_id] = ns.users.pop(user_id)
            ns.index_user(user)
            if first_login is not None:
                user.first_login = first_login
            user.updated_at = now()
            return user

    @staticmethod
    def _check_unique(ns: Namespace, user_id: int, email: str, username: str) -> None:
        """The unique indexes an UPDATE hits, in the order PostgreSQL checks them.

        ``public`` has ``users_username_idx`` then ``users_email_lower_idx``
        (case-blind); tenant schemas have ``users_email_key`` (exact case) then
        ``users_username_key`` (``migrations/tenant/001_init_tenant.sql:6-7``).
        """
        other_name = ns.usernames.get(username)
        name_taken = other_name is not None and other_name != user_id
        if ns.is_public:
            email_taken = any(uid != user_id for uid in ns.emails.get(email.lower(), []))
            checks = (
                (name_taken, "users_username_idx"),
                (email_taken, "users_email_lower_idx"),
            )
        else:
            email_taken = any(
                uid != user_id and ns.users[uid].email == email
                for uid in ns.emails.get(email.lower(), [])
            )
            checks = ((email_taken, "users_email_key"), (name_taken, "users_username_key"))
        for taken, constraint in checks:
            if taken:
                raise EmulatorError(_unique(constraint), "db")

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

    def _drop_user(self, ns: Namespace, user_id: int, *, cascade: bool = False) -> bool:
        """Delete a user; memberships it assigned to others block it unless they go too.

        ``user_groups.assigned_by REFERENCES users`` has no ``ON DELETE`` action
        (``migrations/tenant/001_init_tenant.sql:52``).
        """
        if not cascade and any(
            assigner == user_id and member != user_id
            for (member, _group), assigner in ns.assigners.items()
        ):
            raise EmulatorError(_ASSIGNED_BY_DELETE, "db")
        ns.assigners = {k: v for k, v in ns.assigners.items() if k[0] != user_id}
        user = ns.users.pop(user_id, None)
        if user is not None:
            ns.unindex_user(user)
        ns.memberships.pop(user_id, None)
        ns.user_policies = {(u, p) for u, p in ns.user_policies if u != user_id}
        ns.reset_tokens = {k: t for k, t in ns.reset_tokens.items() if t.user_id != user_id}
        return user is not None

    # -- groups, policies, memberships ------------------------------------

    def create_group(
        self, ns: Namespace, organization_id: int, name: str, description: str | None
    ) -> GroupRecord:
        """``GroupService::create_group``: the name lookup, then the INSERT."""
        with self.lock:
            check_text(name)
            if ns.group_by_name(name, organization_id) is not None:
                raise EmulatorError("group name already exists", "conflict")
            group_id = next(ns.group_seq)
            check_text(description)
            if len(name) > 100:
                raise EmulatorError(_too_long(100), "db")
            if not ns.is_public and ns.group_by_name(name) is not None:
                raise EmulatorError(_unique("groups_name_key"), "db")
            stamp = now()
            group = GroupRecord(
                group_id=group_id,
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
        """``PolicyService::create_policy``: name lookup, empty checks, then the INSERT."""
        with self.lock:
            if effect not in ("Allow", "Deny"):
                raise EmulatorError(f"unknown variant `{effect}`, expected `Allow` or `Deny`")
            check_text(name)
            if any(
                p.name == name and p.organization_id == organization_id
                for p in ns.policies.values()
            ):
                raise EmulatorError("policy name already exists", "conflict")
            if not resource:
                raise EmulatorError("resource cannot be empty")
            if not action:
                raise EmulatorError("action cannot be empty")
            policy_id = next(ns.policy_seq)
            check_text(description, resource, action)
            for limit, value in ((100, name), (255, resource), (100, action)):
                if len(value) > limit:
                    raise EmulatorError(_too_long(limit), "db")
            if not ns.is_public and ns.policy_by_name(name) is not None:
                raise EmulatorError(_unique("policies_name_key"), "db")
            stamp = now()
            policy = PolicyRecord(
                policy_id=policy_id,
                external_id=str(uuid.uuid4()),
                organization_id=organization_id,
                name=name,
                description=description,
                resource=resource,
                action=action,
                effect=effect,
                conditions=jsonb(conditions),
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

    def add_membership(
        self, ns: Namespace, user_id: int, group_id: int, *, assigned_by: int | None = None
    ) -> None:
        """``INSERT INTO user_groups ... ON CONFLICT DO NOTHING`` after the group check."""
        with self.lock:
            if group_id not in ns.groups:
                raise EmulatorError("group not found", "not_found")
            current = ns.memberships.get(user_id, [])
            if group_id in current:
                return
            if user_id not in ns.users:
                raise EmulatorError(_fk_insert("user_groups_user_id_fkey"), "db")
            if assigned_by is not None and assigned_by not in ns.users:
                raise EmulatorError(_fk_insert("user_groups_assigned_by_fkey"), "db")
            ns.memberships.setdefault(user_id, []).append(group_id)
            if assigned_by is not None:
                ns.assigners[(user_id, group_id)] = assigned_by

    def remove_membership(self, ns: Namespace, user_id: int, group_id: int) -> None:
        with self.lock:
            current = ns.memberships.get(user_id, [])
            if group_id in current:
                current.remove(group_id)
                ns.assigners.pop((user_id, group_id), None)

    # -- reset tokens ------------------------------------------------------

    def create_reset_token(self, ns: Namespace, user_id: int) -> str:
        with self.lock:
            token = secrets.token_hex(32)
            ns.reset_tokens[_sha256(token)] = ResetToken(
                token_hash=_sha256(token), user_id=user_id, expires_at=now() + RESET_TOKEN_LIFETIME
            )
            return token

    def valid_reset_token(self, ns: Namespace, token: str) -> int | None:
        """The user id of a valid, unused token (``find_valid_token``), else None."""
        with self.lock:
            record = ns.reset_tokens.get(_sha256(token))
            if record is None or record.used or record.expires_at <= now():
                return None
            return record.user_id

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


_ASSIGNED_BY_DELETE = (
    'error returned from database: update or delete on table "users" violates foreign key '
    'constraint "user_groups_assigned_by_fkey" on table "user_groups"'
)


def _fk_insert(constraint: str) -> str:
    return (
        'error returned from database: insert or update on table "user_groups" '
        f'violates foreign key constraint "{constraint}"'
    )


def _unique(constraint: str) -> str:
    return (
        "error returned from database: duplicate key value violates unique constraint "
        f'"{constraint}"'
    )

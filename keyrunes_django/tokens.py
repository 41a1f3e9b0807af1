"""The bearer-token and organization-key request path, owned by one class.

:class:`TokenAuthenticator` runs the whole sequence, top to bottom, in
overridable steps (as simplejwt's ``JWTAuthentication`` does):

1. :meth:`~TokenAuthenticator.get_header` / :meth:`~TokenAuthenticator.get_raw_token`
   read the ``Authorization`` header (:mod:`keyrunes_django.credentials`);
2. :meth:`~TokenAuthenticator.get_validated_token` asks the cache, which on a
   miss calls :mod:`keyrunes_django.verification` (claims, tenant rule,
   signature or ``/api/me``);
3. :meth:`~TokenAuthenticator.get_user` mirrors the identity onto a local user
   through the configured mapper, remembered per token in this process.

Organization keys take the same road with
:meth:`~TokenAuthenticator.get_organization_key`,
:meth:`~TokenAuthenticator.get_validated_key` and
:meth:`~TokenAuthenticator.get_organization_user`.

The middleware and the DRF classes make one call each
(:meth:`~TokenAuthenticator.authenticate`, or
:meth:`~TokenAuthenticator.aauthenticate` under ASGI).
:func:`authenticate_token`, :func:`authenticate_token_user` and
:func:`authenticate_organization_key` are thin functions over the same object
for code that holds a credential without a request.

Refusals raise :class:`~keyrunes_django.exceptions.InvalidToken` (with a
``reason``) and are reported once, on the ``keyrunes_django.auth`` logger and
the ``credential_rejected`` signal; an outage with no usable cached answer
raises :class:`~keyrunes_django.exceptions.KeyrunesUnavailable`.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import threading
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from asgiref.sync import sync_to_async

from keyrunes_django import signals, tenancy
from keyrunes_django.cache import (
    CacheEntry,
    CachePolicy,
    LocalCache,
    SharedCache,
    VerificationCache,
    credential_hash,
)
from keyrunes_django.conf import clock, keyrunes_settings, on_settings_changed
from keyrunes_django.credentials import (
    MAX_CREDENTIAL_LENGTH,
    invalid,
    parse_authorization_header,
    parse_organization_key_header,
)
from keyrunes_django.exceptions import (
    InvalidToken,
    KeyrunesError,
    KeyrunesUnavailable,
    MirrorRefused,
)
from keyrunes_django.identity import (
    PACKED_COMPARED,
    PACKED_NAMESPACE,
    PACKED_USER_ID,
    OrganizationPrincipal,
    VerifiedIdentity,
    compared_fields,
    pack_identity,
    unpack_identity,
)
from keyrunes_django.revocation import (
    RevocationState,
    Subject,
    refused_by,
    revocation_epoch,
    revocation_state,
)
from keyrunes_django.user_rows import SameUser, UserRow, read_user
from keyrunes_django.users import OrganizationUser, StatelessUser
from keyrunes_django.verification import verify_organization_key, verify_token

if TYPE_CHECKING:
    from django.http import HttpRequest

__all__ = [
    "Authenticated",
    "Credential",
    "TokenAuthenticator",
    "authenticate_organization_key",
    "authenticate_token",
    "authenticate_token_user",
    "forget_organization_key",
    "get_authenticator",
    "warm_answers",
]

logger = logging.getLogger("keyrunes_django.auth")

CredentialKind = Literal["token", "orgkey"]
_KIND_NAMES = {"token": "token", "orgkey": "organization key"}
_SCHEMES = {"token": "Bearer", "orgkey": "OrganizationKey"}
_METRIC_KINDS = {"token": "token", "orgkey": "organization_key"}
_HIT_SOURCES = {"process": "process_cache", "shared": "shared_cache", "stale": "stale"}
ORG_KEY_META = "HTTP_X_ORGANIZATION_KEY"


@dataclass(frozen=True)
class Credential:
    """A credential read from a request: its kind, text and hash."""

    kind: CredentialKind
    text: str
    digest: str


@dataclass(frozen=True)
class Verified:
    """A verified credential not yet turned into a user (what the async path hands over)."""

    credential: Credential
    principal: VerifiedIdentity | OrganizationPrincipal
    fresh_until: float


@dataclass(frozen=True, slots=True)
class Authenticated:
    """Who a request is: the user object and the principal behind it."""

    user: Any
    principal: VerifiedIdentity | OrganizationPrincipal


class _Memo:
    """A mirrored token's answer, kept until its cache entry stops being fresh.

    The identity is kept packed and the user as a shared :class:`UserRow`
    (None for :class:`~keyrunes_django.users.StatelessUser`, built from the
    identity): each request gets objects of its own. ``generation`` is the
    authenticator's revocation generation when the token was last found not
    revoked; a memo of an older generation is not used until the token is
    checked again.
    """

    __slots__ = ("fresh_until", "generation", "packed", "row", "unpacked")

    def __init__(
        self,
        identity: VerifiedIdentity,
        row: UserRow | SameUser | None,
        fresh_until: float,
        generation: int,
    ) -> None:
        self.packed = pack_identity(identity)
        self.row = row
        self.fresh_until = fresh_until
        self.generation = generation
        # The identity kept unpacked while the token is among the recently used
        # (see _HotIdentities); None otherwise.
        self.unpacked: VerifiedIdentity | None = None

    @property
    def is_active(self) -> bool:
        return self.row is None or self.row.is_active

    def is_for(self, identity: VerifiedIdentity) -> bool:
        """Whether this memo answers for ``identity`` (equal as identities compare)."""
        return self.packed[:PACKED_COMPARED] == compared_fields(identity)

    def subject(self) -> tuple[object, object]:
        """(namespace, remote user id) of the token's user."""
        return self.packed[PACKED_NAMESPACE], self.packed[PACKED_USER_ID]

    def answer(self, hot: _HotIdentities) -> Authenticated:
        """The identity (frozen, shared while the token is hot) and a user object of its own."""
        identity = self.unpacked
        if identity is None:
            identity = hot.unpack(self)
        if self.row is None:
            return Authenticated(StatelessUser(identity), identity)
        return Authenticated(self.row.build(), identity)

    def user(self) -> Any:
        """A user object of this request's own."""
        if self.row is None:
            return StatelessUser(unpack_identity(self.packed))
        return self.row.build()


class _HotIdentities:
    """The last ``size`` tokens to be unpacked keep their identity object ready.

    A warm request then costs no unpacking; a memory bound per worker stays
    per token (the packed form) plus this fixed number of identities. The
    oldest loses its object first (and unpacks again if it comes back).
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.order: deque[_Memo] = deque()

    def unpack(self, memo: _Memo) -> VerifiedIdentity:
        identity = unpack_identity(memo.packed)
        if self.size > 0:
            memo.unpacked = identity
            self.order.append(memo)
            while len(self.order) > self.size:
                try:
                    self.order.popleft().unpacked = None
                except IndexError:  # emptied by another thread
                    break
        return identity


#: How many recently used tokens keep their identity unpacked, per process.
HOT_IDENTITIES = 1024


def _subject_key(identity: VerifiedIdentity) -> str:
    """Where :attr:`TokenAuthenticator.subjects` keeps a remote user (as ``Subject.name``)."""
    return f"{identity.namespace}:{identity.user_id}"


def _fingerprint(identity: VerifiedIdentity) -> int:
    """What the mirror writes from an identity, without the token's own times."""
    payload = {k: v for k, v in identity.payload.items() if k not in ("exp", "iat")}
    parts = [
        identity.namespace,
        str(identity.user_id),
        identity.username,
        identity.email,
        str(identity.organization_id),
        str(identity.external_id),
        identity.source,
        repr(sorted(identity.groups or ())) if identity.groups is not None else "None",
        repr(sorted(payload.items())),
    ]
    return int.from_bytes(hashlib.sha256("\x00".join(parts).encode()).digest()[:16], "big")


def _signing_key() -> bytes:
    from django.conf import settings

    configured = keyrunes_settings.CACHE_SIGNING_KEY
    material = str(configured) if configured else str(settings.SECRET_KEY)
    return hashlib.sha256(b"keyrunes-django:shared-cache:" + material.encode()).digest()


def _cache_prefix(mode: str) -> str:
    """The shared-cache key prefix: one per server, tenant and verification mode."""
    binding = "\x00".join(
        [
            str(keyrunes_settings.BASE_URL or ""),
            tenancy.namespace(),
            str(tenancy.organization_scope()),
            mode,
        ]
    )
    return "keyrunes:v2:" + hashlib.sha256(binding.encode()).hexdigest()[:16]


class TokenAuthenticator:
    """Bearer token or organization key -> (user, principal), with caching.

    Built from the settings once per settings value (:func:`get_authenticator`).
    Subclass and override a step to change it; the sequence stays here.
    """

    def __init__(self) -> None:
        s = keyrunes_settings
        self.mode: str = s.verification_mode
        self.fail_open_enabled = bool(s.FAIL_OPEN)
        policy = CachePolicy(
            ttl=float(s.CACHE_TTL),
            negative_ttl=float(s.NEGATIVE_CACHE_TTL),
            stale_if_error=float(s.STALE_IF_ERROR),
        )
        shared = SharedCache(str(s.CACHE_ALIAS), _cache_prefix(self.mode), _signing_key())
        self.cache = VerificationCache(policy, int(s.LOCAL_CACHE_SIZE), shared)
        self.users: LocalCache[_Memo] = LocalCache(int(s.LOCAL_CACHE_SIZE))
        self.hot = _HotIdentities(min(HOT_IDENTITIES, int(s.LOCAL_CACHE_SIZE)))
        # Per remote user: what was last mirrored (a fingerprint), and the row.
        self.subjects: LocalCache[UserRow] = LocalCache(int(s.LOCAL_CACHE_SIZE))
        self.revocation_interval = float(s.REVOCATION_CHECK_INTERVAL)
        # Revocations made elsewhere: the shared revocation epoch seen last, when
        # it was read, and a generation that moves on whenever it changed.
        self.revocation_epoch: str | None = None
        self.revocations_checked_at = float("-inf")
        # Concurrent requests that find the check due wait for one reader.
        self.revocations_lock = threading.Lock()
        self.generation = 0
        self.stateless = bool(s.STATELESS_USERS)

    # ------------------------------------------------------------------ steps

    def get_header(self, request: HttpRequest) -> str | None:
        """The raw ``Authorization`` value."""
        return request.META.get("HTTP_AUTHORIZATION")

    def get_raw_token(self, header: str | None) -> str | None:
        """The bearer token in ``header`` (None for no header or another scheme)."""
        return parse_authorization_header(header)

    def get_organization_key(self, request: HttpRequest) -> str | None:
        """The canonical ``X-Organization-Key`` of ``request`` (None when absent)."""
        return parse_organization_key_header(request.META.get(ORG_KEY_META))

    def get_validated_token(
        self, credential: Credential, request: HttpRequest | None = None
    ) -> Verified:
        """The verified identity of a token: cached, else verified locally or remotely."""
        remote = self.mode != "local"

        def compute() -> tuple[VerifiedIdentity, float | None]:
            identity = verify_token(credential.text, mode=self.mode)
            expires = identity.expires_at
            return identity, expires.timestamp() if expires is not None else None

        # A local verification is a signature check, cheaper than remembering
        # it twice: the token's memo (see get_user) is its only per-process entry.
        entry = self._lookup(credential, compute, shared=remote, remember=remote, request=request)
        assert isinstance(entry.value, VerifiedIdentity)
        return Verified(credential, entry.value, entry.fresh_until)

    def refresh_revocations(self) -> None:
        """Read the shared revocation epoch when it is due; a change re-checks every token.

        One shared-cache read per ``REVOCATION_CHECK_INTERVAL`` per process,
        however many tokens it remembers.
        """
        if clock.now() - self.revocations_checked_at <= self.revocation_interval:
            return
        # Under threads (ASGI, gthread) every request that arrives while the
        # check is due would read the epoch too; the first one reads it for all.
        with self.revocations_lock:
            now = clock.now()
            if now - self.revocations_checked_at <= self.revocation_interval:
                return
            epoch = revocation_epoch()
            if epoch is None or epoch != self.revocation_epoch:
                self.generation += 1
            self.revocation_epoch = epoch
            self.revocations_checked_at = now

    def revocations_changed(self) -> None:
        """Re-check every remembered token and user: this process just revoked something."""
        self.generation += 1

    def check_revocation(
        self,
        credential: Credential,
        identity: VerifiedIdentity,
        request: HttpRequest | None,
        generation: int | None = None,
    ) -> RevocationState | None:
        """Refuse (``revoked``) a denied token, or one issued before its user's not-before.

        With ``generation``, what this process learned of the user's
        revocations in that generation answers without a round trip (None is
        returned), unless some token of the user is on the deny list.
        """
        issued = identity.issued_at.timestamp() if identity.issued_at is not None else None
        row = None
        if generation is not None:
            row = self.subjects.get(_subject_key(identity))
            if row is not None and row.revocations_seen == generation:
                if refused_by(row.not_before, issued):
                    self._refuse_revoked(credential, request)
                return None
        state = revocation_state(Subject(identity.namespace, identity.user_id), credential.digest)
        if row is not None and generation is not None:
            self.learn_revocations(row, state, generation)
        if state.refuses(issued):
            self._refuse_revoked(credential, request)
        return state

    @staticmethod
    def learn_revocations(row: Any, state: RevocationState, generation: int) -> None:
        """Remember a user's not-before for ``generation``, when its other tokens need no read."""
        if type(row) is UserRow and not state.user_has_denials:
            row.revocations_seen = generation
            row.not_before = state.not_before

    def _refuse_revoked(self, credential: Credential, request: HttpRequest | None) -> None:
        err = invalid("revoked")
        self.report_rejected(err, credential, request)
        raise err

    def get_validated_key(
        self, credential: Credential, request: HttpRequest | None = None
    ) -> Verified:
        """The organization behind a key: cached, else asked of Keyrunes."""

        def compute() -> tuple[OrganizationPrincipal, float | None]:
            return verify_organization_key(credential.text), None

        # The shared record decides before this process's memory does, so a key
        # forgotten on one instance (a rotation) is refused on all of them at once.
        entry = self._lookup(credential, compute, shared=True, shared_first=True, request=request)
        assert isinstance(entry.value, OrganizationPrincipal)
        return Verified(credential, entry.value, entry.fresh_until)

    def get_user(self, verified: Verified, request: HttpRequest | None = None) -> Any:
        """The local user of a verified, unrevoked token, mirrored once per token and process.

        The revocation check reads the shared cache (the database when the cache
        has no record of the user), so it runs here, with the mirror, not in
        the network step.
        """
        identity = verified.principal
        assert isinstance(identity, VerifiedIdentity)
        self.refresh_revocations()
        generation = self.generation
        digest = verified.credential.digest
        memo = self.users.get(digest)
        if memo is not None and not memo.is_for(identity):
            memo = None
        state = None
        if memo is None or memo.generation != generation:
            state = self.check_revocation(verified.credential, identity, request, generation)
        if memo is None:
            try:
                user = self.cache.flight.run(
                    "mirror:" + digest, lambda: self.returning_user(identity)
                )
                if not getattr(user, "is_active", True) and identity.source == "token":
                    user = self.reactivated(verified, user)
            except MirrorRefused as exc:
                self.report_rejected(
                    InvalidToken(exc.message, reason=exc.reason), verified.credential, request
                )
                raise
            row = self.row_of(identity, user)
            if state is not None:
                self.learn_revocations(row, state, generation)
            memo = _Memo(identity, row, verified.fresh_until, generation)
            self.users.set(digest, memo)
        else:
            memo.generation = generation
            user = memo.user()
        if not memo.is_active:
            err = invalid("user_inactive")
            self.report_rejected(err, verified.credential, request)
            raise err
        return user

    def returning_user(self, identity: VerifiedIdentity) -> Any:
        """The user of a new token: re-read, not re-mirrored, when nothing Keyrunes says changed.

        A user's next token (every hour, or after a refresh) mostly repeats the
        same claims. When they match what this process last mirrored for that
        user, one read of the user row replaces the mirror (no writes).
        """
        if self.stateless:
            return self.mirror(identity)
        subject = _subject_key(identity)
        row = self.subjects.get(subject)
        if row is not None and row.fingerprint == _fingerprint(identity):
            user = read_user(row.model, row.pk)
            if user is not None:
                return user
            # deleted locally since: mirror again
        return self.mirror(identity)

    def row_of(self, identity: VerifiedIdentity, user: Any) -> UserRow | SameUser | None:
        """The remembered values of a user just read or mirrored (None for a stateless user).

        Also what :meth:`returning_user` compares the user's next token with.
        """
        if type(user) is StatelessUser:
            return None
        if not hasattr(user, "_meta"):
            return SameUser(user)
        subject = _subject_key(identity)
        row = UserRow(user, _fingerprint(identity))
        known = self.subjects.get(subject)
        if known is not None:  # what was learned of the user's revocations stays true
            row.revocations_seen, row.not_before = known.revocations_seen, known.not_before
        self.subjects.set(subject, row)
        return row

    def reactivated(self, verified: Verified, user: Any) -> Any:
        """The user once Keyrunes confirms it, for an inactive user of a locally verified token.

        A token's claims never reactivate a user a sync deactivated (Keyrunes
        re-signs tokens of deleted users); ``/api/me`` for this token does. Its
        answer is cached like a verification; while Keyrunes says no or cannot
        be asked, the user stays inactive.
        """
        credential = verified.credential

        def compute() -> tuple[VerifiedIdentity, float | None]:
            identity = verify_token(credential.text, mode="remote")
            expires = identity.expires_at
            return identity, expires.timestamp() if expires is not None else None

        try:
            entry = self.cache.lookup("confirm", credential.digest, compute, shared=True)
        except KeyrunesUnavailable:
            return user
        if not isinstance(entry.value, VerifiedIdentity):
            return user
        confirmed = entry.value
        return self.cache.flight.run("mirror:" + credential.digest, lambda: self.mirror(confirmed))

    def mirror(self, identity: VerifiedIdentity) -> Any:
        """The user for an identity: mirrored through the configured mapper, or
        a :class:`~keyrunes_django.users.StatelessUser` with ``STATELESS_USERS``.
        """
        if self.stateless:
            return StatelessUser.from_identity(identity)
        from keyrunes_django.mapping import get_mapper

        return get_mapper().mirror(identity).user

    def get_organization_user(self, verified: Verified) -> OrganizationUser:
        """``request.user`` for an organization key."""
        assert isinstance(verified.principal, OrganizationPrincipal)
        return OrganizationUser(verified.principal)

    # --------------------------------------------------------------- sequence

    def warm(self, header: str | None) -> Authenticated | None:
        """A bearer request answered from this process's memory alone, else None.

        No I/O, so it may run on an event loop: one sha256 and one dictionary
        lookup. Anything unusual returns None and the full path reports it.
        """
        if (
            header is None
            or not header.startswith("Bearer ")
            or len(header) > MAX_CREDENTIAL_LENGTH
        ):
            return None
        memo = self.users.get(credential_hash(header[7:]))
        if memo is None or memo.generation != self.generation:
            return None
        now = clock.now()
        if now >= memo.fresh_until or now - self.revocations_checked_at > self.revocation_interval:
            return None
        if not memo.is_active:
            return None
        _count_warm_answer()
        return memo.answer(self.hot)

    def read_token(self, request: HttpRequest) -> Credential | None:
        """The request's bearer token, if any."""
        header = self.get_header(request)
        try:
            token = self.get_raw_token(header)
        except InvalidToken as err:
            self._report_unparsed(err, "token", header, request)
            raise
        return Credential("token", token, credential_hash(token)) if token is not None else None

    def read_key(self, request: HttpRequest) -> Credential | None:
        """The request's organization key, if any."""
        try:
            key = self.get_organization_key(request)
        except InvalidToken as err:
            self._report_unparsed(err, "orgkey", request.META.get(ORG_KEY_META), request)
            raise
        return Credential("orgkey", key, credential_hash(key)) if key is not None else None

    def read_credential(self, request: HttpRequest) -> Credential | None:
        """The request's credential: a bearer token first, else an organization key."""
        return self.read_token(request) or self.read_key(request)

    def verify(self, credential: Credential, request: HttpRequest | None = None) -> Verified:
        """Step 2 for either kind (network, no database)."""
        if credential.kind == "token":
            return self.get_validated_token(credential, request)
        return self.get_validated_key(credential, request)

    def finish(self, verified: Verified, request: HttpRequest | None = None) -> Authenticated:
        """Step 3 for either kind (database for tokens)."""
        if verified.credential.kind == "token":
            return Authenticated(self.get_user(verified, request), verified.principal)
        return Authenticated(self.get_organization_user(verified), verified.principal)

    def authenticate(self, request: HttpRequest) -> Authenticated | None:
        """The whole sequence; None when the request carries no Keyrunes credential."""
        found = self.warm(self.get_header(request))
        if found is not None:
            return found
        credential = self.read_credential(request)
        if credential is None:
            return None
        return self.finish(self.verify(credential, request), request)

    async def aauthenticate(self, request: HttpRequest) -> Authenticated | None:
        """:meth:`authenticate` for ASGI: warm on the loop, network and database in threads."""
        found = self.warm(self.get_header(request))
        if found is not None:
            return found
        credential = await sync_to_async(self.read_credential)(request)
        if credential is None:
            return None
        # Network in a thread of its own (cold requests must not queue behind each
        # other); the mirror in Django's thread-sensitive executor, like all ORM work.
        verified = await sync_to_async(self.verify, thread_sensitive=False)(credential, request)
        return await sync_to_async(self.finish)(verified, request)

    # -------------------------------------------------------------- reporting

    def _lookup(
        self,
        credential: Credential,
        compute: Any,
        *,
        shared: bool,
        shared_first: bool = False,
        remember: bool = True,
        request: HttpRequest | None,
    ) -> CacheEntry:
        operation = "verify_token" if credential.kind == "token" else "verify_org_key"
        kind = _METRIC_KINDS[credential.kind]
        remote = credential.kind != "token" or self.mode != "local"
        source = ["remote" if remote else "local"]

        def stale(error: KeyrunesUnavailable) -> None:
            self.report_outage(error, operation, request, served_stale=True)

        def hit(layer: str) -> None:
            source[0] = _HIT_SOURCES[layer]
            if layer != "stale":
                signals.cache_hit.send(sender=TokenAuthenticator, kind=kind, layer=layer)

        def counted() -> Any:
            signals.cache_miss.send(sender=TokenAuthenticator, kind=kind)
            return compute()

        try:
            entry = self.cache.lookup(
                credential.kind,
                credential.digest,
                counted,
                shared=shared,
                shared_first=shared_first,
                remember=remember,
                on_stale=stale,
                on_hit=hit,
            )
            entry.raise_if_refused()
        except InvalidToken as err:
            self.report_rejected(err, credential, request)
            raise
        except KeyrunesUnavailable as exc:
            self.report_outage(exc, operation, request, served_stale=False)
            raise
        signals.credential_verified.send(
            sender=TokenAuthenticator, kind=kind, source=source[0], request=request
        )
        return entry

    def _report_unparsed(
        self, error: InvalidToken, kind: CredentialKind, raw: str | None, request: Any
    ) -> None:
        digest = credential_hash((raw or "")[:MAX_CREDENTIAL_LENGTH])
        self.report_rejected(error, Credential(kind, "", digest), request)

    def report_rejected(
        self, error: InvalidToken, credential: Credential, request: HttpRequest | None
    ) -> None:
        """Log and signal a refused credential (by its hash only)."""
        error.scheme = _SCHEMES[credential.kind]
        kind = _KIND_NAMES[credential.kind]
        logger.warning(
            "keyrunes %s rejected: %s",
            kind,
            error.reason,
            extra={
                "event": "credential_rejected",
                "credential_kind": kind,
                "reason": error.reason,
                "credential_hash": credential.digest,
            },
        )
        signals.credential_rejected.send(
            sender=InvalidToken,
            reason=error.reason,
            request=request,
            credential_hash=credential.digest,
        )

    def report_outage(
        self,
        error: KeyrunesError,
        operation: str,
        request: HttpRequest | None,
        *,
        served_stale: bool,
    ) -> None:
        """Log and signal that Keyrunes could not answer ``operation``."""
        logger.log(
            logging.WARNING if served_stale else logging.ERROR,
            "keyrunes unavailable during %s (%s)%s",
            operation,
            error,
            "; serving the cached identity" if served_stale else "",
            extra={
                "event": "auth_service_error",
                "operation": operation,
                "served_stale": served_stale,
                "status_code": error.status_code,
            },
        )
        signals.auth_service_error.send(
            sender=KeyrunesError,
            error=error,
            operation=operation,
            request=request,
            served_stale=served_stale,
        )

    def fail_open(self, error: KeyrunesUnavailable, request: HttpRequest | None) -> bool:
        """Whether ``FAIL_OPEN`` lets this request through as anonymous (logged loudly if so)."""
        if not self.fail_open_enabled:
            return False
        logger.error(
            "KEYRUNES FAIL_OPEN: Keyrunes is unavailable (%s); the request continues "
            "UNAUTHENTICATED instead of getting 503",
            error,
            extra={"event": "fail_open", "path": getattr(request, "path", None)},
        )
        return True

    def forget_subject(self, namespace: str, user_id: int) -> None:
        """Drop this process's remembered users of one remote user (after a revocation)."""
        self.users.discard_where(lambda memo: memo.subject() == (namespace, user_id))

    def forget_user(self, model: type, pk: Any) -> int:
        """Drop this process's remembered tokens of one local user; how many were dropped."""
        return self.users.discard_where(
            lambda memo: (
                memo.row is not None
                and type(memo.row) is UserRow
                and memo.row.model is model
                and memo.row.pk == pk
            )
        )

    def forget(self, kind: CredentialKind, text: str) -> None:
        """Drop what this process and the shared cache remember about a credential."""
        digest = credential_hash(text)
        self.cache.forget(kind, digest)
        self.users.delete(digest)


def _on_user_saved(sender: Any, instance: Any, **kwargs: Any) -> None:
    # A user deactivated here (the admin, a shell) is refused by this process at
    # once; other processes refuse it when their entry for the token ends.
    if getattr(instance, "is_active", True) or _authenticator is None:
        return
    _authenticator.forget_user(type(instance), instance.pk)


def connect_receivers() -> None:
    """Forget a user's remembered tokens when it is saved inactive (from ``AppConfig.ready``)."""
    from django.contrib.auth import get_user_model
    from django.db.models.signals import post_save

    post_save.connect(
        _on_user_saved, sender=get_user_model(), dispatch_uid="keyrunes_django.tokens"
    )


# Warm answers are counted, not signalled: a signal per warm request would cost
# more than the answer itself. Metrics read the count when they are scraped.
_warm_counter = itertools.count(1)
_warm_answers = 0


def _count_warm_answer() -> None:
    global _warm_answers
    _warm_answers = next(_warm_counter)  # next() on a count is atomic


def warm_answers() -> int:
    """How many bearer requests this process answered from its memory alone, so far."""
    return _warm_answers


_authenticator: TokenAuthenticator | None = None
_authenticator_lock = threading.Lock()


def get_authenticator() -> TokenAuthenticator:
    """The process's authenticator, an instance of ``AUTHENTICATOR_CLASS``.

    Rebuilt after a settings change.
    """
    global _authenticator
    current = _authenticator
    if current is None:
        with _authenticator_lock:
            current = _authenticator
            if current is None:
                cls = keyrunes_settings.AUTHENTICATOR_CLASS
                current = _authenticator = cls()
    return current


@on_settings_changed
def reset_authenticator() -> None:
    """Forget the authenticator and everything its per-process caches hold."""
    global _authenticator
    with _authenticator_lock:
        _authenticator = None


# --------------------------------------------------------------- thin functions


def _token_credential(token: str, request: HttpRequest | None) -> Credential:
    auth = get_authenticator()
    if len(token) > MAX_CREDENTIAL_LENGTH:
        err = invalid("header_too_large")
        auth._report_unparsed(err, "token", token, request)
        raise err
    return Credential("token", token, credential_hash(token))


def authenticate_token(token: str, *, request: HttpRequest | None = None) -> VerifiedIdentity:
    """The verified, unrevoked identity of a bearer token (cached; local or remote per settings).

    Reads the database when the shared cache holds no revocation record of the
    token's user.
    """
    auth = get_authenticator()
    credential = _token_credential(token, request)
    verified = auth.get_validated_token(credential, request)
    assert isinstance(verified.principal, VerifiedIdentity)
    auth.check_revocation(credential, verified.principal, request)
    return verified.principal


def authenticate_token_user(
    token: str, *, request: HttpRequest | None = None
) -> tuple[Any, VerifiedIdentity]:
    """(local user, identity) for a bearer token.

    Raises :class:`InvalidToken` (also when the local user is inactive) and
    :class:`~keyrunes_django.exceptions.MirrorRefused` when the mapping
    settings refuse the user.
    """
    auth = get_authenticator()
    verified = auth.get_validated_token(_token_credential(token, request), request)
    user = auth.get_user(verified, request)
    assert isinstance(verified.principal, VerifiedIdentity)
    return user, verified.principal


def authenticate_organization_key(
    key: str, *, request: HttpRequest | None = None
) -> OrganizationPrincipal:
    """The organization behind an ``X-Organization-Key`` value (cached by its hash).

    The key must belong to this service's organization (see
    :mod:`keyrunes_django.tenancy`); other keys are refused with
    ``scope_mismatch``, and all keys with ``organization_unknown`` while this
    service's organization cannot be established.
    """
    auth = get_authenticator()
    try:
        canonical = parse_organization_key_header(key)
        if canonical is None:
            raise invalid("malformed")
    except InvalidToken as err:
        auth._report_unparsed(err, "orgkey", key, request)
        raise
    verified = auth.get_validated_key(
        Credential("orgkey", canonical, credential_hash(canonical)), request
    )
    assert isinstance(verified.principal, OrganizationPrincipal)
    return verified.principal


def forget_organization_key(key: str) -> None:
    """Drop every cached answer about an organization key (after a rotation).

    Instances sharing the cache stop accepting it on their next request with it.
    """
    from keyrunes_django.tenancy import forget_service_organization

    canonical = parse_organization_key_header(key)
    if canonical is not None:
        get_authenticator().forget("orgkey", canonical)
    forget_service_organization()

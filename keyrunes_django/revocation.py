"""Ending access that Keyrunes itself cannot end.

Keyrunes has no revocation: a token is good until its ``exp`` (one hour) and
``/api/refresh-token`` re-signs old claims without looking at its database.
This module adds two things on our side, enforced on every path that accepts
a token (sessions, local and remote bearer tokens):

* a per-user **not-before**: tokens of that user issued before a recorded
  second are refused (:func:`revoke_user_tokens`). Kept in the database
  (:class:`~keyrunes_django.models.TokenRevocation`) and mirrored into the
  shared cache;
* a **deny list** of single tokens, kept in the shared cache until the token
  expires (:func:`deny_token`): logout puts the session's token there.

A revocation takes effect at once in the process that made it. Other
processes that share the cache see it within ``REVOCATION_CHECK_INTERVAL``
seconds: every revocation changes a shared epoch, which each process reads at
most that often (one read, however many tokens it remembers), and only when it
changed are the remembered tokens checked again. A warm request makes no
round trip.

What it cannot stop: a holder of a token issued before the not-before may ask
Keyrunes to refresh it, and gets a new one with a new issue time. Only
``/api/me`` (remote mode, and the session re-check) sees that the user is gone;
rotating ``JWT_SECRET`` on the server ends every token.
"""

from __future__ import annotations

import logging
import math
import secrets
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from keyrunes_django import signals
from keyrunes_django.cache import credential_hash
from keyrunes_django.claims import token_expiry
from keyrunes_django.conf import clock, keyrunes_settings
from keyrunes_django.identity import VerifiedIdentity

if TYPE_CHECKING:
    from django.http import HttpRequest

__all__ = [
    "RevocationState",
    "Subject",
    "deny_token",
    "end_other_sessions",
    "end_sessions_after_reset",
    "is_revoked",
    "refused_by",
    "remember_reset_request",
    "revocation_epoch",
    "revocation_state",
    "revoke_subjects",
    "revoke_user_tokens",
    "subject_of",
]

logger = logging.getLogger("keyrunes_django.auth")

USER_KIND = "revoked-user"
TOKEN_KIND = "denied-token"
#: Per user: until when some token of that user stays on the deny list.
DENIALS_KIND = "denials-of"
EPOCH_KIND = "revocation-epoch"
#: Seconds the epoch record is kept; a lost record only makes every process
#: re-check its tokens once.
EPOCH_TTL = 30 * 86_400
#: Seconds a user's not-before stays in the shared cache; the database keeps
#: it for good and refills the cache after a miss.
USER_RECORD_TTL = 86_400
#: How long Keyrunes signs a token for (``exp - iat``); also the assumed
#: remaining life of a token whose ``exp`` cannot be read.
FALLBACK_TOKEN_LIFETIME = 3600


@dataclass(frozen=True)
class Subject:
    """A remote user: ids are unique only inside a namespace."""

    namespace: str
    user_id: int

    @property
    def name(self) -> str:
        return f"{self.namespace}:{self.user_id}"


def subject_of(user_or_identity: Any) -> Subject | None:
    """The remote user behind a subject, identity or mirrored Django user (None: local-only)."""
    if isinstance(user_or_identity, Subject):
        return user_or_identity
    if isinstance(user_or_identity, VerifiedIdentity):
        return Subject(user_or_identity.namespace, user_or_identity.user_id)
    from keyrunes_django.models import KeyrunesIdentity

    pk = getattr(user_or_identity, "pk", None)
    if pk is None:
        return None
    record = KeyrunesIdentity.objects.filter(user_id=pk).only("namespace", "remote_user_id").first()
    if record is None:
        return None
    return Subject(record.namespace, record.remote_user_id)


def _shared() -> Any:
    from keyrunes_django.tokens import get_authenticator

    return get_authenticator().cache.shared


def revoke_user_tokens(
    user_or_identity: Any, *, reason: str, request: HttpRequest | None = None
) -> datetime | None:
    """Refuse from now on every token of this user issued before the current second.

    Returns the recorded not-before (None for a user Keyrunes does not know).
    The project's own code may call it; the app calls it for logout-everywhere,
    password changes and resets, deactivation by sync, the admin action and
    ``manage.py keyrunes_revoke_tokens``.
    """
    from keyrunes_django.models import TokenRevocation
    from keyrunes_django.tokens import get_authenticator

    subject = subject_of(user_or_identity)
    if subject is None:
        return None
    # Whole seconds: a token's iat has 1 s resolution, and a token issued in the
    # same second (a re-login right after a password change) must stay valid.
    not_before = datetime.fromtimestamp(math.floor(clock.now()), tz=timezone.utc)
    record, created = TokenRevocation.objects.get_or_create(
        namespace=subject.namespace,
        remote_user_id=subject.user_id,
        defaults={"not_before": not_before, "reason": reason[:64]},
    )
    if not created and record.not_before < not_before:
        record.not_before = not_before
        record.reason = reason[:64]
        record.save(update_fields=["not_before", "reason", "updated_at"])
    effective = max(record.not_before, not_before) if not created else not_before
    _publish_user(subject, effective)
    _new_epoch()
    get_authenticator().revocations_changed()
    get_authenticator().forget_subject(subject.namespace, subject.user_id)
    _announce("tokens_revoked", reason, request, subject=subject, not_before=effective)
    return effective


def revoke_subjects(subjects: list[Subject], *, reason: str) -> datetime:
    """:func:`revoke_user_tokens` for many users at once (what a sync's deactivation uses).

    A bounded number of queries and shared-cache round trips whatever the count.
    """
    from keyrunes_django.models import TokenRevocation
    from keyrunes_django.tokens import get_authenticator

    not_before = datetime.fromtimestamp(math.floor(clock.now()), tz=timezone.utc)
    records = [
        TokenRevocation(
            namespace=s.namespace, remote_user_id=s.user_id, not_before=not_before, reason=reason
        )
        for s in subjects
    ]
    TokenRevocation.objects.bulk_create(
        records,
        batch_size=500,
        update_conflicts=True,
        unique_fields=["namespace", "remote_user_id"],
        update_fields=["not_before", "reason", "updated_at"],
    )
    value = {"not_before": int(not_before.timestamp())}
    _shared().set_values({(USER_KIND, s.name): value for s in subjects}, USER_RECORD_TTL)
    if subjects:
        _new_epoch()
    names = {(s.namespace, s.user_id) for s in subjects}
    get_authenticator().revocations_changed()
    get_authenticator().users.discard_where(lambda memo: memo.subject() in names)
    if subjects:
        _announce("tokens_revoked", reason, None, count=len(subjects), not_before=not_before)
    return not_before


def deny_token(token: str, *, reason: str, request: HttpRequest | None = None) -> None:
    """Refuse this one token everywhere until it expires (logout does this)."""
    from keyrunes_django.tokens import get_authenticator

    digest = credential_hash(token)
    exp = token_expiry(token)
    now = clock.now()
    remaining = (exp - now if exp is not None else FALLBACK_TOKEN_LIFETIME) + float(
        keyrunes_settings.JWT_LEEWAY
    )
    if remaining > 0:
        subject = _token_subject(token)
        if subject is not None:
            # Before the token's own record: a process that finds no mark on
            # the user may skip reading the records of the user's other tokens.
            _mark_denials(subject, remaining)
        _shared().set_value(TOKEN_KIND, digest, {"reason": reason[:64]}, remaining)
        _new_epoch()
    get_authenticator().revocations_changed()
    get_authenticator().forget("token", token)
    _announce("token_denied", reason, request, credential_hash=digest)


def _token_subject(token: str) -> Subject | None:
    """The user a token names (unverified); None when its claims cannot be read.

    A token whose claims cannot be read is refused by every verification, so
    it needs no mark on a user.
    """
    from keyrunes_django.claims import parse, read_claims
    from keyrunes_django.exceptions import InvalidToken

    try:
        claims = read_claims(parse(token))
    except InvalidToken:
        return None
    return Subject(claims.namespace, claims.user_id)


def _mark_denials(subject: Subject, remaining: float) -> None:
    # Written without reading the mark first: it outlives this token by a whole
    # token lifetime (Keyrunes signs tokens for an hour), so any other token of
    # the user denied at the same moment expires before the mark, whichever
    # write lands last.
    _shared().set_value(
        DENIALS_KIND, subject.name, {"denied": True}, remaining + FALLBACK_TOKEN_LIFETIME
    )


@dataclass(frozen=True, slots=True)
class RevocationState:
    """What the shared cache says of one token and its user."""

    #: The token itself is on the deny list.
    token_denied: bool
    #: The user's not-before (epoch seconds), None when there is none.
    not_before: float | None
    #: Some token of the user may still be on the deny list: another token's
    #: state cannot be told from this one.
    user_has_denials: bool

    def refuses(self, issued_at: float | None) -> bool:
        """Whether the token (issued at ``issued_at``) is revoked."""
        return self.token_denied or refused_by(self.not_before, issued_at)


def refused_by(not_before: float | None, issued_at: float | None) -> bool:
    """Whether a user's not-before refuses a token issued at ``issued_at`` (None: unknown)."""
    return not_before is not None and (issued_at is None or issued_at < not_before)


def revocation_state(subject: Subject, digest: str) -> RevocationState:
    """The revocation records of a token (by its subject and hash).

    One shared-cache round trip; the database only when the cache holds no
    record of the user (and then the cache is refilled).
    """
    keys = [(USER_KIND, subject.name), (TOKEN_KIND, digest), (DENIALS_KIND, subject.name)]
    found = _shared().get_values(keys)
    if found is None:
        found = {}
    record = found.get(keys[0])
    if record is None:
        stored = _stored_not_before(subject)
        _publish_user(subject, stored)
        not_before = stored.timestamp() if stored is not None else None
    else:
        value = record.get("not_before")
        not_before = float(value) if isinstance(value, int) else None
    return RevocationState(keys[1] in found, not_before, keys[2] in found)


def is_revoked(subject: Subject, issued_at: float | None, digest: str) -> bool:
    """Whether a token (by its subject, ``iat`` and hash) has been revoked (one round trip)."""
    return revocation_state(subject, digest).refuses(issued_at)


def revocation_epoch() -> str | None:
    """The shared epoch that changes with every revocation.

    ``""`` when no revocation was recorded (or its record expired); None when
    the shared cache could not be read, which callers treat as a change.
    """
    found = _shared().get_values([(EPOCH_KIND, "all")])
    if found is None:
        return None
    record = found.get((EPOCH_KIND, "all"))
    value = record.get("epoch") if record is not None else ""
    return value if isinstance(value, str) else ""


def _new_epoch() -> None:
    # Every process compares the epoch at most every REVOCATION_CHECK_INTERVAL
    # and re-checks its remembered tokens when it changed.
    _shared().set_value(EPOCH_KIND, "all", {"epoch": secrets.token_hex(8)}, EPOCH_TTL)


def _stored_not_before(subject: Subject) -> datetime | None:
    from keyrunes_django.models import TokenRevocation

    record = (
        TokenRevocation.objects.filter(namespace=subject.namespace, remote_user_id=subject.user_id)
        .only("not_before")
        .first()
    )
    return record.not_before if record is not None else None


def _publish_user(subject: Subject, not_before: datetime | None) -> None:
    value = int(not_before.timestamp()) if not_before is not None else None
    _shared().set_value(USER_KIND, subject.name, {"not_before": value}, USER_RECORD_TTL)


def _announce(event: str, reason: str, request: HttpRequest | None, **fields: Any) -> None:
    from keyrunes_django.audit import audit_event

    subject = fields.pop("subject", None)
    if subject is not None:
        fields.update(namespace=subject.namespace, user_id=subject.user_id)
    not_before = fields.get("not_before")
    if isinstance(not_before, datetime):
        fields["not_before"] = not_before.isoformat()
    logger.info("keyrunes %s (%s)", event, reason, extra={"event": event, "reason": reason})
    audit_event(event, request=request, reason=reason, **fields)
    signal = signals.tokens_revoked if event == "tokens_revoked" else signals.token_denied
    signal.send(sender=revoke_user_tokens, reason=reason, request=request, **fields)


def _on_user_logged_out(sender: Any, request: HttpRequest | None = None, **kwargs: Any) -> None:
    # Sent before the session is flushed, so the session's token is still there.
    from keyrunes_django.sessions import get_session_token

    token = get_session_token(request) if request is not None else None
    if token is not None:
        deny_token(token, reason="logout", request=request)


def connect_receivers() -> None:
    """Deny the session's token at every logout (idempotent; called from ``AppConfig.ready``)."""
    from django.contrib.auth.signals import user_logged_out

    user_logged_out.connect(_on_user_logged_out, dispatch_uid="keyrunes_django.revocation")


def end_other_sessions(request: HttpRequest | None, user: Any, *, reason: str) -> None:
    """After a password change or reset: the user's older tokens and other sessions end.

    Tokens issued before now are refused (:func:`revoke_user_tokens`), and every
    Django session of the user is invalidated by rotating the session hash Django
    derives from the (unusable) password field. When ``request`` is the user's
    own signed-in session it stays signed in, with a fresh Keyrunes token.
    """
    from django.contrib.auth import update_session_auth_hash

    revoke_user_tokens(user, reason=reason, request=request)
    if user.has_usable_password():
        return  # a local password: Django's own change already rotated the hash
    user.set_unusable_password()
    user.save(update_fields=["password"])
    if request is not None and getattr(getattr(request, "user", None), "pk", None) == user.pk:
        update_session_auth_hash(request, user)
        _renew_session_token(request)


def _renew_session_token(request: HttpRequest) -> None:
    """Replace the session's token (issued before the not-before) with a fresh one."""
    from keyrunes_django.client import get_client
    from keyrunes_django.exceptions import KeyrunesError
    from keyrunes_django.sessions import get_session_token, store_session_token

    token = get_session_token(request)
    if token is None:
        return
    try:
        fresh = get_client().refresh_token(token, body_token=token).token
    except KeyrunesError:
        return  # the session ends at its next revocation check; the user signs in again
    exp = token_expiry(fresh) or clock.now() + FALLBACK_TOKEN_LIFETIME
    store_session_token(request, fresh, datetime.fromtimestamp(exp, tz=timezone.utc))


#: Where a forgot-password request remembers whose reset it started.
RESET_SESSION_KEY = "_keyrunes_reset_email"
#: How long a reset link may be used (the server's lifetime of a reset token).
RESET_LIFETIME = 86_400


def remember_reset_request(request: HttpRequest, email: str, reset_token: str | None) -> None:
    """Note whose reset a forgot-password request started (see :func:`end_sessions_after_reset`).

    Keyrunes' reset answer does not name the user, so the email typed here is
    kept in this browser's session and, when the server hands out the reset
    token, under a keyed hash of that token in the cache.
    """
    from django.core.cache import caches

    from keyrunes_django.audit import keyed_hash

    if hasattr(request, "session"):
        request.session[RESET_SESSION_KEY] = email
    if reset_token:
        key = "keyrunes:reset:" + keyed_hash(reset_token, purpose=RESET_SESSION_KEY)
        caches[str(keyrunes_settings.CACHE_ALIAS)].set(key, email, RESET_LIFETIME)


def end_sessions_after_reset(request: HttpRequest, reset_token: str) -> bool:
    """After a successful reset: end the user's tokens and sessions, when the user is known.

    True when the user could be identified (the forgot-password request went
    through this app, in this browser or with the token handed back by Keyrunes).
    """
    from django.core.cache import caches

    from keyrunes_django.audit import keyed_hash
    from keyrunes_django.models import KeyrunesIdentity
    from keyrunes_django.tenancy import namespace
    from keyrunes_django.throttling import remote_account_id

    key = "keyrunes:reset:" + keyed_hash(reset_token, purpose=RESET_SESSION_KEY)
    email = caches[str(keyrunes_settings.CACHE_ALIAS)].get(key)
    session = getattr(request, "session", None)
    if email is None and session is not None:
        email = session.get(RESET_SESSION_KEY)
    if session is not None:
        session.pop(RESET_SESSION_KEY, None)
    if not isinstance(email, str):
        return False
    remote_id = remote_account_id(email, namespace())
    record = (
        KeyrunesIdentity.objects.select_related("user")
        .filter(namespace=namespace(), remote_user_id=remote_id)
        .first()
        if remote_id is not None
        else None
    )
    if record is None:
        return False
    end_other_sessions(None, record.user, reason="password_reset")
    return True

"""Signals sent by keyrunes-django.

Receivers get keyword arguments only; none of them ever carries a raw token,
key or password.
"""

from __future__ import annotations

from django.dispatch import Signal

#: Before a mirrored user is saved; receivers may edit ``user``.
#: kwargs: ``user``, ``identity`` (VerifiedIdentity), ``created`` (bool).
populate_user = Signal()

#: After a user was mirrored. kwargs: ``user``, ``identity``, ``created``, ``changed``.
user_mirrored = Signal()

#: A login against Keyrunes succeeded. kwargs: ``user``, ``identity``, ``request``.
login_succeeded = Signal()

#: A login against Keyrunes failed. kwargs: ``identity`` (the login name given),
#: ``reason`` (short code), ``request``.
login_failed = Signal()

#: A bearer token or organization key was refused. kwargs: ``reason``, ``request``,
#: ``credential_hash`` (sha256 hex of the credential, never the credential).
credential_rejected = Signal()

#: Keyrunes was unreachable or answered garbage. kwargs: ``error`` (exception),
#: ``operation`` (short name), ``request`` (may be None), ``served_stale`` (bool).
auth_service_error = Signal()

#: Tokens of a user issued before ``not_before`` are refused from now on. kwargs:
#: ``reason``, ``request`` (may be None), ``namespace``, ``user_id``, ``not_before`` (ISO text).
tokens_revoked = Signal()

#: One token was put on the deny list (logout). kwargs: ``reason``, ``request``,
#: ``credential_hash``.
token_denied = Signal()

#: The circuit breaker in front of Keyrunes changed state. kwargs: ``breaker``
#: (the CircuitBreaker), ``old_state`` and ``new_state`` (``"closed"``, ``"open"``
#: or ``"half_open"``), ``retry_after`` (seconds until calls resume, 0.0 when closed).
breaker_state_changed = Signal()

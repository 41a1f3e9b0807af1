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

# Counters for monitoring (keyrunes_django.metrics turns them into Prometheus
# metrics). Senders are the module that sends them; arguments are short codes.

#: A bearer token or organization key was accepted. kwargs: ``kind`` (``"token"``
#: or ``"organization_key"``), ``source`` (``"process_cache"``, ``"shared_cache"``,
#: ``"local"`` for a local HS256 check, ``"remote"`` for an answer of Keyrunes,
#: ``"stale"`` for a cached answer served during an outage), ``request`` (may be None).
credential_verified = Signal()

#: A verification answer (positive or negative) was found in a cache. kwargs:
#: ``kind`` (``"token"`` or ``"organization_key"``), ``layer`` (``"process"`` or
#: ``"shared"``).
cache_hit = Signal()

#: No cached answer: the credential is checked locally or by Keyrunes. kwargs: ``kind``.
cache_miss = Signal()

#: One HTTP call to Keyrunes finished (each retry is its own call). kwargs:
#: ``operation`` (the route's short name: ``"me"``, ``"verify_org_key"``,
#: ``"check_permission"``, ``"health"``, ...), ``outcome`` (``"ok"`` for 2xx,
#: ``"refused"`` for 4xx, ``"error"`` for 5xx, timeouts and connection errors),
#: ``status_code`` (int or None), ``duration`` (seconds, float).
remote_call = Signal()

"""Settings of the bench project, read from the environment the harness sets.

``BENCH_PG_PORT`` selects PostgreSQL (else SQLite at ``BENCH_SQLITE_PATH``),
``BENCH_REDIS_URL`` a Redis cache shared by the workers (else a per-process
LocMem cache), ``BENCH_KEYRUNES`` a JSON object merged over the ``KEYRUNES``
settings below, ``BENCH_DB_POOL=1`` psycopg's connection pool (ASGI servers).
"""

from __future__ import annotations

import json
import os
from typing import Any

SECRET_KEY = "bench-only-" + "k" * 40
DEBUG = False
USE_TZ = True
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
ROOT_URLCONF = "benchproject.urls"
WSGI_APPLICATION = "benchproject.wsgi.application"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "rest_framework",
    "keyrunes_django",
]
MIDDLEWARE: list[str] = []
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

JWT_SECRET = os.environ.get("BENCH_JWT_SECRET", "bench-jwt-secret-" + "s" * 40)

if os.environ.get("BENCH_PG_PORT"):
    _db: dict[str, Any] = {
        "ENGINE": "django.db.backends.postgresql",
        "HOST": "127.0.0.1",
        "PORT": os.environ["BENCH_PG_PORT"],
        "NAME": os.environ.get("BENCH_PG_DB", "keyrunes_bench"),
        "USER": "postgres",
    }
    if os.environ.get("BENCH_DB_POOL") == "1":
        # Persistent per-thread connections leak under ASGI; a pool is Django's answer.
        _db["OPTIONS"] = {"pool": {"min_size": 2, "max_size": 16, "timeout": 30}}
    else:
        _db["CONN_MAX_AGE"] = 60
else:
    _db = {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("BENCH_SQLITE_PATH", "/tmp/keyrunes-bench.sqlite3"),
        "OPTIONS": {"timeout": 30},
    }
DATABASES = {"default": _db}

if os.environ.get("BENCH_REDIS_URL"):
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": os.environ["BENCH_REDIS_URL"],
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

KEYRUNES: dict[str, Any] = {
    "BASE_URL": os.environ.get("BENCH_KEYRUNES_URL", "http://127.0.0.1:9"),
    "JWT_SECRET": JWT_SECRET,
    "VERIFICATION_MODE": os.environ.get("BENCH_KEYRUNES_MODE", "local"),
}
KEYRUNES.update(json.loads(os.environ.get("BENCH_KEYRUNES", "{}")))
if isinstance(KEYRUNES.get("TIMEOUT"), list):
    KEYRUNES["TIMEOUT"] = tuple(KEYRUNES["TIMEOUT"])

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    "DEFAULT_PERMISSION_CLASSES": [],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "UNAUTHENTICATED_USER": None,
}

SIMPLE_JWT = {
    "SIGNING_KEY": "bench-simplejwt-" + "j" * 40,
    "ALGORITHM": "HS256",
    "ACCESS_TOKEN_LIFETIME": __import__("datetime").timedelta(hours=6),
}

# mozilla-django-oidc, bearer tokens checked against a local fake userinfo endpoint.
_OIDC = os.environ.get("BENCH_OIDC_URL", "http://127.0.0.1:9")
OIDC_RP_CLIENT_ID = "bench"
OIDC_RP_CLIENT_SECRET = "bench"
OIDC_RP_SIGN_ALGO = "HS256"
OIDC_OP_AUTHORIZATION_ENDPOINT = _OIDC + "/authorize"
OIDC_OP_TOKEN_ENDPOINT = _OIDC + "/token"
OIDC_OP_USER_ENDPOINT = _OIDC + "/userinfo"
OIDC_DRF_AUTH_BACKEND = "mozilla_django_oidc.auth.OIDCAuthenticationBackend"
OIDC_CREATE_USER = False

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "loggers": {
        "django.request": {"handlers": ["stderr"], "level": "ERROR"},
        # One line per outage request would drown the log; errors still show.
        "keyrunes_django": {"handlers": ["stderr"], "level": "ERROR", "propagate": False},
        "keyrunes_django.client": {"handlers": ["stderr"], "level": "WARNING", "propagate": False},
    },
}

"""Settings of the example project (a small site and API in front of Keyrunes)."""

from __future__ import annotations

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-project-not-for-production")
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
ROOT_URLCONF = "example_project.urls"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "keyrunes_django",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "keyrunes_django.middleware.KeyrunesAuthenticationMiddleware",
    "keyrunes_django.middleware.KeyrunesSessionRefreshMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

AUTHENTICATION_BACKENDS = ["keyrunes_django.backends.KeyrunesBackend"]

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "example_project" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("EXAMPLE_DB", str(BASE_DIR / ".run" / "example.sqlite3")),
    }
}

CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
SESSION_ENGINE = "django.contrib.sessions.backends.db"  # the Keyrunes token stays server-side

STATIC_URL = "/static/"
LOGIN_URL = "/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/"

# Everything about Keyrunes comes from the environment, so pointing the demo at
# a real server is a matter of setting KEYRUNES_URL (and its secret/key).
KEYRUNES: dict[str, object] = {
    "BASE_URL": os.environ.get("KEYRUNES_URL", "http://127.0.0.1:8765"),
    "NAMESPACE": os.environ.get("KEYRUNES_NAMESPACE", "public"),
    "JWT_SECRET": os.environ.get("KEYRUNES_JWT_SECRET") or None,
    "ORGANIZATION_KEY": os.environ.get("KEYRUNES_ORGANIZATION_KEY") or None,
    # Organization keys are accepted only from this service's own organization.
    "ORGANIZATION_SCOPE": int(os.environ.get("KEYRUNES_ORGANIZATION_SCOPE", "1")) or None,
    # The demo lets visitors create accounts (account/register/); off by default elsewhere.
    "REGISTRATION_ENABLED": os.environ.get("KEYRUNES_REGISTRATION", "1") == "1",
    # The demo shows the reset link this server version returns instead of mailing it.
    "SHOW_RESET_LINK": os.environ.get("KEYRUNES_SHOW_RESET_LINK", "0") == "1",
}
if os.environ.get("KEYRUNES_SERVICE_IDENTITY"):
    KEYRUNES["SERVICE_ACCOUNT"] = {
        "IDENTITY": os.environ["KEYRUNES_SERVICE_IDENTITY"],
        "PASSWORD": os.environ.get("KEYRUNES_SERVICE_PASSWORD", ""),
    }
elif os.environ.get("KEYRUNES_SERVICE_TOKEN"):
    KEYRUNES["SERVICE_ACCOUNT"] = {"TOKEN_ENV": "KEYRUNES_SERVICE_TOKEN"}

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "keyrunes_django.drf.authentication.KeyrunesTokenAuthentication",
        "keyrunes_django.drf.authentication.KeyrunesOrganizationKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    # The default for API views; each view in api.py names its own classes too.
    "DEFAULT_PERMISSION_CLASSES": ["keyrunes_django.drf.permissions.IsKeyrunesAuthenticated"],
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
    # drf-spectacular builds /api/schema/; keyrunes_django.drf.openapi names the schemes.
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Keyrunes example API",
    "DESCRIPTION": "Send a Keyrunes token (Authorize: keyrunesBearer) or an organization key.",
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
}

# Websockets (example_project/asgi.py, served by daphne); runserver stays WSGI.
ASGI_APPLICATION = "example_project.asgi.application"

# Demo only: the home page shows a signed-in user a curl line carrying their
# own token. Never on without DEBUG; scripts/demo.sh turns it on.
EXAMPLE_SHOW_API_TOKEN = DEBUG and os.environ.get("EXAMPLE_SHOW_API_TOKEN", "0") == "1"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"keyrunes_django": {"handlers": ["console"], "level": "INFO"}},
}

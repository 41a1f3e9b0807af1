"""Our DRF classes can be named in REST_FRAMEWORK's DEFAULT_* settings.

DRF resolves those settings while ``rest_framework.views`` is being imported,
so a module that imports ``rest_framework.views`` at runtime would fail with a
circular import there. Run in a fresh interpreter so nothing is pre-imported.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_classes_work_as_drf_defaults() -> None:
    code = textwrap.dedent(
        """
        import django
        from django.conf import settings

        settings.configure(
            INSTALLED_APPS=[
                "django.contrib.auth",
                "django.contrib.contenttypes",
                "rest_framework",
                "keyrunes_django",
            ],
            DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
            KEYRUNES={"BASE_URL": "http://127.0.0.1:9"},
            REST_FRAMEWORK={
                "DEFAULT_AUTHENTICATION_CLASSES": [
                    "keyrunes_django.drf.authentication.KeyrunesTokenAuthentication",
                    "keyrunes_django.drf.authentication.KeyrunesOrganizationKeyAuthentication",
                ],
                "DEFAULT_PERMISSION_CLASSES": [
                    "keyrunes_django.drf.permissions.IsKeyrunesAuthenticated",
                ],
            },
        )
        django.setup()
        from rest_framework.views import APIView

        names = [c.__name__ for c in APIView.permission_classes + APIView.authentication_classes]
        print(",".join(names))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        "IsKeyrunesAuthenticated,KeyrunesTokenAuthentication,KeyrunesOrganizationKeyAuthentication"
    )

"""The test settings with a custom user model whose USERNAME_FIELD is ``email``.

Used only by the sub-suite in ``tests/custom_user`` (run in a subprocess by
``tests/test_backends.py``).
"""

from __future__ import annotations

from tests.settings import *  # noqa: F403

AUTH_USER_MODEL = "testapp.EmailUser"

# The main run may be using the PostgreSQL test database at the same time.
DATABASES = {
    alias: {**conf, "TEST": {"NAME": "test_keyrunes_email_user"}}
    if conf["ENGINE"].endswith("postgresql")
    else conf
    for alias, conf in DATABASES.items()  # noqa: F405
}

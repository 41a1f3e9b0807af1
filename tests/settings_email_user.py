"""The test settings with a custom user model whose USERNAME_FIELD is ``email``.

Used only by the sub-suite in ``tests/custom_user`` (run in a subprocess by
``tests/test_backends.py``).
"""

from __future__ import annotations

from tests.settings import *  # noqa: F403

AUTH_USER_MODEL = "testapp.EmailUser"

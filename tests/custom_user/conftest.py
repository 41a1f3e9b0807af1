"""Collected only when AUTH_USER_MODEL is the email-keyed test model.

``tests/test_backends.py::test_custom_user_model_suite`` runs this directory
in a subprocess with ``--ds=tests.settings_email_user``; in the main run
(default user model) it is skipped at collection.
"""

from __future__ import annotations

from django.conf import settings

collect_ignore_glob = [] if settings.AUTH_USER_MODEL == "testapp.EmailUser" else ["test_*.py"]

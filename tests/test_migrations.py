"""The models and the committed migrations agree."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command


@pytest.mark.django_db
def test_no_missing_migrations() -> None:
    out = StringIO()
    try:
        call_command(
            "makemigrations", "keyrunes_django", check=True, dry_run=True, stdout=out, stderr=out
        )
    except SystemExit as exc:  # makemigrations --check exits 1 when changes are pending
        pytest.fail(f"Missing migrations for keyrunes_django:\n{out.getvalue()} ({exc})")
    assert "No changes detected" in out.getvalue()

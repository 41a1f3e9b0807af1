"""The README's settings reference and check-id table stay in step with the code."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from keyrunes_django import checks
from keyrunes_django.conf import DEFAULTS

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def documented_rows() -> set[str]:
    return set(re.findall(r"^\| `([A-Z0-9_]+|keyrunes_django\.[EW]\d{3})` \|", README, re.M))


@pytest.mark.parametrize("key", sorted(DEFAULTS))
def test_every_setting_has_a_row_in_the_settings_reference(key: str) -> None:
    assert key in documented_rows(), f"README settings reference lacks a row for {key}"


def test_every_check_id_is_documented() -> None:
    source = Path(checks.__file__).read_text()
    source += (ROOT / "keyrunes_django" / "policies.py").read_text()
    ids = set(re.findall(r"keyrunes_django\.[EW]\d{3}", source))
    assert ids, "no check ids found"
    missing = sorted(ids - documented_rows())
    assert not missing, f"README lacks rows for {missing}"

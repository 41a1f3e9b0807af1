"""The documentation stays in step with the code: settings, check ids, loggers, links."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from keyrunes_django.conf import DEFAULTS

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "keyrunes_django"
DOCS = ROOT / "docs"


def rows(page: str) -> set[str]:
    """The first cell of every table row of a docs page, when it is a `code` name."""
    text = (DOCS / page).read_text()
    return set(re.findall(r"^\| `([^`]+)` \|", text, re.M))


@pytest.mark.parametrize("key", sorted(DEFAULTS))
def test_every_setting_has_a_row_in_the_settings_reference(key: str) -> None:
    assert key in rows("reference/settings.md"), f"docs/reference/settings.md lacks {key}"


def check_ids_in_code() -> set[str]:
    ids: set[str] = set()
    for module in PACKAGE.rglob("*.py"):
        ids |= set(re.findall(r"keyrunes_django\.[EW]\d{3}", module.read_text()))
    return ids


def test_every_check_id_is_documented() -> None:
    ids = check_ids_in_code()
    assert "keyrunes_django.E001" in ids
    missing = sorted(ids - rows("reference/checks.md"))
    assert not missing, f"docs/reference/checks.md lacks rows for {missing}"


def logger_names_in_code() -> set[str]:
    names: set[str] = set()
    for module in PACKAGE.rglob("*.py"):
        source = module.read_text()
        dotted = ".".join(module.relative_to(ROOT).with_suffix("").parts)
        if "getLogger(__name__)" in source:
            names.add(dotted)
        names |= set(re.findall(r"getLogger\(\s*\"(keyrunes_django[\w.]*)\"", source))
        names |= set(re.findall(r"LOGGER_NAME\s*=\s*\"(keyrunes_django[\w.]*)\"", source))
    return names


def test_every_logger_is_documented() -> None:
    names = logger_names_in_code()
    assert {"keyrunes_django.auth", "keyrunes_django.audit"} <= names
    missing = sorted(names - rows("reference/signals.md"))
    assert not missing, f"docs/reference/signals.md lacks loggers {missing}"


def test_readme_links_to_files_that_exist() -> None:
    readme = (ROOT / "README.md").read_text()
    targets = re.findall(r"\]\(((?!https?://|#)[^)#]+)", readme)
    assert "docs/reference/settings.md" in targets
    missing = [t for t in targets if not (ROOT / t).exists()]
    assert not missing, f"README.md links to missing files: {missing}"

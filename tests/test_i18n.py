"""Translations: complete catalogs, compiled in step, and refusals in the caller's language.

The catalog tests need GNU gettext (``msgfmt``, ``xgettext``), as
``makemessages`` and ``compilemessages`` do.
"""

from __future__ import annotations

import ast
import gettext
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from django.test import Client, override_settings
from django.utils import translation

import keyrunes_django
from keyrunes_django import responses
from keyrunes_django.forms import KeyrunesAuthenticationForm
from keyrunes_django.password_forms import KeyrunesPasswordChangeForm

PACKAGE = Path(keyrunes_django.__file__).resolve().parent
REPOSITORY = PACKAGE.parent
LANGUAGES = ("pt_BR", "es")
PLACEHOLDER = re.compile(r"%\(\w+\)[sd]")


# ---------------------------------------------------------------- catalogs


@dataclass
class Entry:
    """One message of a ``.po`` file."""

    context: str | None = None
    msgid: str = ""
    plural: str | None = None
    translations: list[str] = field(default_factory=list)
    flags: set[str] = field(default_factory=set)

    @property
    def key(self) -> tuple[str | None, str]:
        return (self.context, self.msgid)


def read_po(path: Path) -> list[Entry]:
    """The live (not obsolete) entries of a ``.po`` file, header included."""
    entries: list[Entry] = []
    entry = Entry()
    target: str | None = None
    started = False

    def finish() -> None:
        nonlocal entry, started
        if started:
            entries.append(entry)
        entry, started = Entry(), False

    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#~"):
            continue
        if line.startswith("#,"):
            if started:
                finish()
            entry.flags.update(flag.strip() for flag in line[2:].split(","))
            continue
        if line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        if line.startswith('"'):
            value = ast.literal_eval(line)
        else:
            value = ast.literal_eval(rest)
            if keyword in ("msgctxt", "msgid") and entry.translations:
                finish()
            started = True
            target = keyword
            if keyword.startswith("msgstr"):
                entry.translations.append("")
        if target == "msgctxt":
            entry.context = (entry.context or "") + value
        elif target == "msgid":
            entry.msgid += value
        elif target == "msgid_plural":
            entry.plural = (entry.plural or "") + value
        else:
            entry.translations[-1] += value
    finish()
    return entries


def catalog(language: str) -> Path:
    return PACKAGE / "locale" / language / "LC_MESSAGES" / "django.po"


def messages_of(path: Path) -> dict[tuple[str | None, str], Entry]:
    return {entry.key: entry for entry in read_po(path) if entry.msgid}


def run(command: list[str], cwd: Path) -> None:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "PYTHONPATH": os.pathsep.join([str(REPOSITORY), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}"


@pytest.fixture(scope="module")
def extracted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the package with fresh catalogs from ``makemessages``."""
    copy = tmp_path_factory.mktemp("i18n") / "keyrunes_django"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__", "locale"))
    (copy / "locale").mkdir()
    languages = [arg for language in LANGUAGES for arg in ("-l", language)]
    run([sys.executable, "-m", "django", "makemessages", *languages, "--no-obsolete"], copy)
    return copy / "locale"


@pytest.mark.parametrize("language", LANGUAGES)
def test_the_catalog_holds_every_string_makemessages_finds(extracted: Path, language: str) -> None:
    fresh = messages_of(extracted / language / "LC_MESSAGES" / "django.po")
    committed = messages_of(catalog(language))
    assert len(fresh) > 80  # the extraction really ran over the package
    missing = sorted(msgid for _, msgid in set(fresh) - set(committed))
    stale = sorted(msgid for _, msgid in set(committed) - set(fresh))
    hint = "run `cd keyrunes_django && django-admin makemessages -a --no-obsolete`, translate"
    assert not missing, f"strings missing from the {language} catalog ({hint}): {missing}"
    assert not stale, f"strings no longer in the code, in the {language} catalog: {stale}"
    for key, entry in fresh.items():
        assert committed[key].plural == entry.plural, entry.msgid


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_message_is_translated_and_keeps_its_placeholders(language: str) -> None:
    entries = read_po(catalog(language))
    header = entries[0]
    assert header.msgid == ""
    assert "fuzzy" not in header.flags
    assert f"Language: {language}\n" in header.translations[0]
    assert "Plural-Forms: nplurals=2;" in header.translations[0]
    for entry in entries[1:]:
        assert "fuzzy" not in entry.flags, f"fuzzy in {language}: {entry.msgid!r}"
        assert len(entry.translations) == (2 if entry.plural else 1), entry.msgid
        for text in entry.translations:
            assert text.strip(), f"untranslated in {language}: {entry.msgid!r}"
            assert text != entry.msgid or entry.msgid in _SAME_IN_EVERY_LANGUAGE, entry.msgid
            wanted = set(PLACEHOLDER.findall(entry.msgid))
            assert set(PLACEHOLDER.findall(text)) == wanted, f"{language}: {entry.msgid!r}"


# Texts that read the same once translated (none today; a proper noun would go here).
_SAME_IN_EVERY_LANGUAGE: frozenset[str] = frozenset()


def _compiled(path: Path) -> dict[Any, str]:
    with path.open("rb") as stream:
        return dict(gettext.GNUTranslations(stream)._catalog)  # type: ignore[attr-defined]


@pytest.mark.parametrize("language", LANGUAGES)
def test_the_compiled_catalog_is_in_step_with_its_source(tmp_path: Path, language: str) -> None:
    source = catalog(language)
    shipped = source.with_suffix(".mo")
    assert shipped.is_file(), f"{shipped} is missing: run `django-admin compilemessages`"
    fresh = tmp_path / "django.mo"
    run(["msgfmt", "--check", "-o", str(fresh), str(source)], tmp_path)
    assert _compiled(shipped) == _compiled(fresh), (
        f"{shipped} is older than {source.name}: run `django-admin compilemessages`"
    )


def test_the_wheel_ships_the_catalogs() -> None:
    text = (REPOSITORY / "pyproject.toml").read_text(encoding="utf-8")
    package_data = text.split("[tool.setuptools.package-data]", 1)[1].split("\n[", 1)[0]
    assert '"locale/*/LC_MESSAGES/*.po"' in package_data
    assert '"locale/*/LC_MESSAGES/*.mo"' in package_data


# --------------------------------------------------------- texts in use

MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "keyrunes_django.middleware.KeyrunesAuthenticationMiddleware",
]


@pytest.mark.django_db
@pytest.mark.usefixtures("clean_caches")
@pytest.mark.urls("tests.test_middleware")
def test_a_refusal_under_a_portuguese_site(keyrunes: Any, keyrunes_user: Any) -> None:
    token = keyrunes.expired_token(keyrunes_user)
    with override_settings(MIDDLEWARE=MIDDLEWARE, LANGUAGE_CODE="pt-br"):
        response = Client().get(
            "/whoami/", HTTP_ACCEPT="application/json", HTTP_AUTHORIZATION=f"Bearer {token}"
        )
        text = Client().get(
            "/whoami/", HTTP_ACCEPT="text/html", HTTP_AUTHORIZATION=f"Bearer {token}"
        )
    assert response.status_code == 401
    assert response.json() == {
        "error": "invalid_token",
        "reason": "expired",
        "detail": "O token expirou.",
    }
    # The challenge is US-ASCII (RFC 6750): it keeps the English description.
    assert 'error_description="The token has expired."' in response["WWW-Authenticate"]
    assert text.content.decode() == "401 Unauthorized: O token expirou.\n"


@pytest.mark.django_db
@pytest.mark.usefixtures("clean_caches")
@pytest.mark.urls("tests.test_middleware")
def test_a_cached_refusal_is_told_in_each_callers_language(
    keyrunes: Any, keyrunes_user: Any
) -> None:
    token = keyrunes.expired_token(keyrunes_user)
    details = []
    for language in ("es", "pt-br", "en"):
        with override_settings(MIDDLEWARE=MIDDLEWARE, LANGUAGE_CODE=language):
            response = Client().get(
                "/whoami/", HTTP_ACCEPT="application/json", HTTP_AUTHORIZATION=f"Bearer {token}"
            )
        details.append(response.json()["detail"])
    assert details == ["El token ha expirado.", "O token expirou.", "The token has expired."]


def test_a_lazy_description_keeps_the_challenge_in_english() -> None:
    with translation.override("es"):
        challenge = responses.www_authenticate(
            translation.gettext_lazy("The credential is invalid.")
        )
        assert responses.localized("The credential is invalid.") == "La credencial no es válida."
    assert 'error_description="The credential is invalid."' in challenge


@pytest.mark.django_db
def test_the_login_form_tells_the_outage_in_spanish(
    rf: Any, keyrunes: Any, keyrunes_user: Any
) -> None:
    keyrunes.faults.add("/api/login", status=503)
    request = rf.post("/login/")
    data = {"username": keyrunes_user.username, "password": keyrunes_user.password}
    with translation.override("es"):
        form = KeyrunesAuthenticationForm(request, data=data)
        assert not form.is_valid()
        assert form.non_field_errors() == [
            "El servicio de autenticación no está disponible. Inténtelo de nuevo más tarde."
        ]
        assert form.non_field_errors().as_data()[0].code == "service_unavailable"


def test_password_form_errors_and_labels_in_spanish(rf: Any) -> None:
    data = {"old_password": "a", "new_password1": "new-secret-2", "new_password2": "other-3"}
    with translation.override("es"):
        form = KeyrunesPasswordChangeForm(rf.post("/"), data=data)
        assert not form.is_valid()
        assert form.errors["new_password2"] == ["Los dos campos de contraseña no coinciden."]
        assert str(form.fields["old_password"].label) == "Contraseña actual"
        assert "Contraseña actual" in str(form)


def test_an_empty_description_never_becomes_the_catalog_header() -> None:
    with translation.override("pt-br"):
        assert responses.localized("") == ""
        assert responses.localized("A text no catalog has.") == "A text no catalog has."


@pytest.mark.django_db
@pytest.mark.usefixtures("clean_caches")
@pytest.mark.urls("tests.test_drf_authentication")
def test_a_drf_refusal_in_spanish(keyrunes: Any, keyrunes_user: Any) -> None:
    from rest_framework.test import APIClient

    token = keyrunes.expired_token(keyrunes_user)
    with override_settings(LANGUAGE_CODE="es"):
        response = APIClient().get("/api/whoami/", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 401
    assert response.json() == {"detail": "El token ha expirado."}
    assert 'error_description="The token has expired."' in response["WWW-Authenticate"]


def test_permission_messages_built_at_import_follow_the_active_language() -> None:
    from keyrunes_django.drf import permissions as kp

    needs_group = kp.HasGroup("editors", "writers")
    needs_org = kp.IsOrganization(7)
    with translation.override("pt-br"):
        assert str(needs_group.message) == (
            "É necessário pertencer a um dos grupos editors, writers."
        )
        assert str(kp.HasAllGroups("a").message) == "É necessário pertencer a todos os grupos a."
        assert str(needs_org.message) == "É necessária uma chave válida da organização 7."
        assert str(kp.HasPermission("docs", "read").message) == (
            "É necessária a permissão 'read' em 'docs'."
        )
    with translation.override("es"):
        assert (
            str(needs_group.message)
            == "Se requiere pertenecer a uno de los grupos editors, writers."
        )
        assert str(kp.IsKeyrunesAdmin.message) == "Se requiere acceso de administrador de Keyrunes."
    with translation.override("en"):
        assert str(needs_org.message) == "A valid key of organization 7 is required."
        assert str(kp.HasPermission("docs", "read").message) == (
            "Permission 'read' on 'docs' is required."
        )


@pytest.mark.parametrize(
    ("language", "retry_after", "login", "other"),
    [
        (
            "en",
            120,
            "Too many failed login attempts. Please try again in 2 minutes.",
            "Too many attempts. Please try again in 2 minutes.",
        ),
        (
            "en",
            30,
            "Too many failed login attempts. Please try again in 1 minute.",
            "Too many attempts. Please try again in 1 minute.",
        ),
        (
            "pt-br",
            60,
            "Tentativas de login malsucedidas demais. Tente novamente em 1 minuto.",
            "Tentativas demais. Tente novamente em 1 minuto.",
        ),
        (
            "pt-br",
            600,
            "Tentativas de login malsucedidas demais. Tente novamente em 10 minutos.",
            "Tentativas demais. Tente novamente em 10 minutos.",
        ),
        (
            "es",
            61,
            "Demasiados intentos fallidos de inicio de sesión. Inténtelo de nuevo en 2 minutos.",
            "Demasiados intentos. Inténtelo de nuevo en 2 minutos.",
        ),
    ],
)
def test_throttle_messages_count_minutes_in_each_language(
    language: str, retry_after: int, login: str, other: str
) -> None:
    from keyrunes_django.throttling import LoginThrottled, Throttled

    with translation.override(language):
        login_error = LoginThrottled(scope="account", retry_after=retry_after)
        other_error = Throttled(scope="ip", retry_after=retry_after)
    assert str(login_error) == login
    assert login_error.messages == [login]
    assert login_error.code == "login_throttled"
    assert str(other_error) == other


@pytest.mark.django_db
def test_a_page_in_spanish() -> None:
    with override_settings(LANGUAGE_CODE="es"):
        page = Client().get("/account/password/forgot/").content.decode()
    assert '<html lang="es">' in page
    assert "¿Olvidó su contraseña?" in page
    assert "Enviarme un enlace de restablecimiento" in page
    assert "Correo electrónico" in page  # the form's label


@pytest.mark.django_db
def test_admin_messages_in_portuguese() -> None:
    from django.contrib.auth import get_user_model

    from keyrunes_django.admin import resync_users
    from keyrunes_django.models import KeyrunesIdentity

    user_model = get_user_model()
    user_model.objects.create_user("local-1")
    user_model.objects.create_user("local-2")
    with translation.override("pt-br"):
        outcome = resync_users(user_model.objects.all())
        assert [text for _, text in outcome] == [
            "2 usuários selecionados são apenas locais: ignorados."
        ]
        assert str(KeyrunesIdentity._meta.verbose_name_plural) == "Identidades Keyrunes"


@pytest.mark.django_db
def test_admin_action_messages_and_columns_in_portuguese(rf: Any) -> None:
    from django.contrib import admin as django_admin
    from django.contrib.auth import get_user_model
    from django.contrib.messages.storage.cookie import CookieStorage
    from django.utils import timezone

    from keyrunes_django.admin import KeyrunesIdentityAdmin
    from keyrunes_django.models import KeyrunesIdentity, TokenRevocation

    user_model = get_user_model()
    user_model.objects.create_user("local-1")
    user_model.objects.create_user("local-2")
    request = rf.post("/admin/")
    request._messages = CookieStorage(request)
    model_admin = django_admin.site._registry[user_model]
    mirrored = user_model.objects.create_user("remote-1")
    record = KeyrunesIdentity.objects.create(user=mirrored, namespace="public", remote_user_id=9)
    TokenRevocation.objects.create(
        namespace="public", remote_user_id=9, not_before=timezone.now(), reason=""
    )
    with translation.override("pt-br"):
        model_admin.sign_out_everywhere(request, user_model.objects.exclude(pk=mirrored.pk))
        column = KeyrunesIdentityAdmin(KeyrunesIdentity, django_admin.site).tokens_not_before(
            record
        )
        action = str(model_admin.sign_out_everywhere.short_description)
    assert [str(message) for message in request._messages] == [
        "Todas as sessões encerradas: 0 usuário.",
        "2 usuários não são do Keyrunes e não foram alterados.",
    ]
    assert column.endswith(" (sem motivo)")
    assert action.startswith("Encerrar todas as sessões")


@pytest.mark.django_db
@pytest.mark.usefixtures("clean_caches")
@pytest.mark.urls("tests.test_middleware")
def test_a_mirror_refusal_from_the_middleware_in_portuguese(
    keyrunes: Any, keyrunes_user: Any, settings: Any
) -> None:
    token = keyrunes.issue_token(keyrunes_user)
    keyrunes_settings = {**settings.KEYRUNES, "REQUIRE_GROUP": "staff"}
    with override_settings(
        MIDDLEWARE=MIDDLEWARE, LANGUAGE_CODE="pt-br", KEYRUNES=keyrunes_settings
    ):
        response = Client().get(
            "/whoami/", HTTP_ACCEPT="application/json", HTTP_AUTHORIZATION=f"Bearer {token}"
        )
    assert response.status_code == 403
    assert response.json()["detail"] == "Este usuário não pode usar este serviço."
    assert response.json()["error"] == "forbidden"


@pytest.mark.django_db
@pytest.mark.usefixtures("clean_caches")
@pytest.mark.urls("tests.test_ninja")
def test_ninja_refusals_in_spanish(keyrunes: Any, keyrunes_user: Any, settings: Any) -> None:
    token = keyrunes.issue_token(keyrunes_user)
    expired = keyrunes.expired_token(keyrunes_user)
    keyrunes_settings = {**settings.KEYRUNES, "DENY_GROUP": keyrunes_user.groups[0]}
    with override_settings(LANGUAGE_CODE="es"):
        refused = Client().get("/api/me", HTTP_AUTHORIZATION=f"Bearer {expired}")
        with override_settings(KEYRUNES=keyrunes_settings):
            denied = Client().get("/api/me", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert refused.status_code == 401
    assert refused.json()["detail"] == "El token ha expirado."
    assert refused.json()["reason"] == "expired"
    assert denied.status_code == 403
    assert denied.json()["detail"] == "Este usuario no puede usar este servicio."

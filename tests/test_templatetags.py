"""{% load keyrunes %}: group, admin and policy checks in templates."""

from __future__ import annotations

from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.core.cache import caches
from django.template import engines
from django.test import RequestFactory, override_settings

from keyrunes_django.identity import OrganizationPrincipal, VerifiedIdentity
from keyrunes_django.testing import KeyrunesEmulator
from keyrunes_django.testing.emulator import EmulatedUser
from keyrunes_django.users import StatelessUser

CHECK = "/api/check-permission"


def render(source: str, **context: Any) -> str:
    template = engines["django"].from_string("{% load keyrunes %}" + source)
    return template.render(context).strip()


def identity(groups: tuple[str, ...], user_id: int = 7) -> VerifiedIdentity:
    return VerifiedIdentity(
        user_id=user_id,
        username="alice",
        email="alice@example.com",
        namespace="public",
        organization_id=1,
        groups=groups,
    )


def request_as(principal: Any = None, user: Any = None) -> Any:
    request = RequestFactory().get("/")
    request.user = user if user is not None else AnonymousUser()
    request.keyrunes = principal
    return request


# ------------------------------------------------------------ groups and admin


@pytest.mark.parametrize(
    ("groups", "expected"),
    [
        (("users", "editors"), "editor:yes admin:no"),
        (("superadmin",), "editor:no admin:yes"),
        (("editorial",), "editor:no admin:no"),
        ((), "editor:no admin:no"),
    ],
)
def test_group_and_admin_filters(groups: tuple[str, ...], expected: str) -> None:
    source = (
        'editor:{{ user|in_keyrunes_group:"editors"|yesno:"yes,no" }} '
        'admin:{{ user|is_keyrunes_admin|yesno:"yes,no" }}'
    )
    assert render(source, user=StatelessUser(identity(groups))) == expected
    # the request works as well, and a bearer principal on it wins
    assert render(source.replace("user|", "request|"), request=request_as(identity(groups))) == (
        expected
    )


@pytest.mark.parametrize(
    "subject",
    [
        AnonymousUser(),
        None,
        "",
        request_as(OrganizationPrincipal(organization_id=1)),
    ],
)
def test_callers_without_groups(subject: Any) -> None:
    source = '{{ s|in_keyrunes_group:"editors" }} {{ s|is_keyrunes_admin }}'
    assert render(source, s=subject) == "False False"


def test_group_name_must_be_a_name() -> None:
    user = StatelessUser(identity(("editors",)))
    assert render("{{ u|in_keyrunes_group:3 }}", u=user) == "False"
    assert render('{{ u|in_keyrunes_group:"" }}', u=user) == "False"


def test_has_group_tag_any_and_all() -> None:
    source = (
        '{% keyrunes_has_group "editors" "writers" as any %}'
        '{% keyrunes_has_group "editors" "writers" all=True as every %}'
        "{{ any }} {{ every }}"
    )
    assert render(source, request=request_as(identity(("editors",)))) == "True False"
    assert render(source, request=request_as(identity(("editors", "writers")))) == "True True"
    assert render(source, user=StatelessUser(identity(("writers",)))) == "True False"
    assert render(source) == "False False"
    assert render('{% keyrunes_has_group as x %}{{ x }}', user=StatelessUser(identity(()))) == (
        "False"
    )
    assert render("{% keyrunes_has_group 3 as x %}{{ x }}", request=request_as(identity(()))) == (
        "False"
    )


# ---------------------------------------------------------------- policies


@pytest.fixture
def reader(keyrunes: KeyrunesEmulator, db: Any) -> EmulatedUser:
    keyrunes.create_group("editors")
    keyrunes.create_policy("docs_1_read", "docs:1", "read")
    keyrunes.create_policy("docs_2_read", "docs:2", "read")
    keyrunes.attach_policy("docs_1_read", group="editors")
    keyrunes.attach_policy("docs_2_read", group="editors")
    caches["default"].clear()
    return keyrunes.create_user(groups=("users", "editors"))


PAGE = (
    '{% keyrunes_can "docs:1" "read" as a %}'
    '{% keyrunes_can "docs:1" "read" as b %}'
    '{% keyrunes_can "docs:{id}" "read" id=1 as c %}'
    '{% keyrunes_can "docs:{id}" "read" id=2 as d %}'
    '{% keyrunes_can "docs:3" "read" as e %}'
    '{% keyrunes_can "docs:1" "write" as f %}'
    '{% for i in rows %}{% keyrunes_can "docs:{id}" "read" id=i as r %}{{ r|yesno:"Y,N" }}'
    "{% endfor %} {{ a }} {{ b }} {{ c }} {{ d }} {{ e }} {{ f }}"
)


def no_permission_cache() -> Any:
    return override_settings(KEYRUNES={**settings.KEYRUNES, "PERMISSION_CACHE_TTL": 0})


def test_one_remote_call_per_distinct_question_per_request(
    keyrunes: KeyrunesEmulator, reader: EmulatedUser
) -> None:
    with no_permission_cache():
        keyrunes.reset_counters()
        request = request_as(identity(("users", "editors"), user_id=reader.user_id))
        rows = [1, 2, 1, 2, 3] * 20
        output = render(PAGE, request=request, rows=rows)
        assert output == "YYYYN" * 20 + " True True True True False False"
        # docs:1/read, docs:2/read, docs:3/read, docs:1/write
        assert keyrunes.requests_to(CHECK) == 4
        render(PAGE, request=request, rows=rows)
        assert keyrunes.requests_to(CHECK) == 4  # same request: remembered
        render(PAGE, request=request_as(identity(("users", "editors"), reader.user_id)), rows=[])
        assert keyrunes.requests_to(CHECK) == 8  # a new request asks again


def test_answers_are_per_caller_within_a_request(
    keyrunes: KeyrunesEmulator, reader: EmulatedUser
) -> None:
    outsider = keyrunes.create_user(groups=("users",))
    with no_permission_cache():
        request = request_as(identity(("users", "editors"), user_id=reader.user_id))
        assert render('{% keyrunes_can "docs:1" "read" as x %}{{ x }}', request=request) == "True"
        # the request now speaks for somebody else (e.g. after login()): no stale answer
        request.keyrunes = identity(("users",), user_id=outsider.user_id)
        assert render('{% keyrunes_can "docs:1" "read" as x %}{{ x }}', request=request) == (
            "False"
        )


def test_without_a_request_the_user_is_asked(
    keyrunes: KeyrunesEmulator, reader: EmulatedUser
) -> None:
    user = StatelessUser(identity(("editors",), user_id=reader.user_id))
    assert render('{% keyrunes_can "docs:2" "read" as x %}{{ x }}', user=user) == "True"
    assert render('{% keyrunes_can "docs:3" "read" as x %}{{ x }}', user=user) == "False"


@pytest.mark.parametrize(
    "tag",
    [
        '{% keyrunes_can "docs:{id}" "read" as x %}',  # placeholder without a value
        '{% keyrunes_can "docs:{0}" "read" as x %}',
        '{% keyrunes_can "" "read" as x %}',
        '{% keyrunes_can "docs:1" "" as x %}',
        '{% keyrunes_can missing "read" as x %}',
        '{% keyrunes_can "docs:1" 3 as x %}',
    ],
)
def test_unanswerable_questions_deny_without_asking(
    keyrunes: KeyrunesEmulator, reader: EmulatedUser, tag: str
) -> None:
    keyrunes.reset_counters()
    request = request_as(identity(("editors",), user_id=reader.user_id))
    assert render(tag + "{{ x }}", request=request) == "False"
    assert keyrunes.requests_to(CHECK) == 0


@pytest.mark.parametrize(
    "principal", [None, OrganizationPrincipal(organization_id=1)], ids=["anonymous", "org"]
)
def test_callers_without_policies_deny_without_asking(
    keyrunes: KeyrunesEmulator, reader: EmulatedUser, principal: Any
) -> None:
    keyrunes.reset_counters()
    output = render('{% keyrunes_can "docs:1" "read" as x %}{{ x }}', request=request_as(principal))
    assert output == "False"
    assert keyrunes.requests_to(CHECK) == 0


def test_placeholder_values_are_not_templates(
    keyrunes: KeyrunesEmulator, reader: EmulatedUser
) -> None:
    # A value holding braces is data: it is not filled a second time.
    keyrunes.create_policy("odd", "docs:{x}", "read")
    keyrunes.attach_policy("odd", group="editors")
    request = request_as(identity(("editors",), user_id=reader.user_id))
    source = '{% keyrunes_can "docs:{id}" "read" id=value as x %}{{ x }}'
    assert render(source, request=request, value="{x}") == "True"

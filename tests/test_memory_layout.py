"""What a process remembers per token: packed identities, shared rows of column values."""

from __future__ import annotations

import gc
import sys
import types
from datetime import datetime, timezone
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.db.models.signals import post_init
from django.test import RequestFactory

from keyrunes_django import identity as identity_module
from keyrunes_django.identity import (
    VerifiedIdentity,
    common_groups,
    common_string,
    pack_identity,
    unpack_identity,
)
from keyrunes_django.tokens import get_authenticator
from keyrunes_django.user_rows import UserRow, read_user
from tests.factories import make_token

pytestmark = pytest.mark.usefixtures("local")


def token_identity(**payload: Any) -> VerifiedIdentity:
    base: dict[str, object] = {
        "sub": "7",
        "email": "a@example.com",
        "username": "alice",
        "groups": ["users", "admin"],
        "namespace": "public",
        "organization_id": 1,
        "exp": 2_000_000_000,
        "iat": 1_999_990_000,
        "iss": "keyrunes",
    }
    base.update(payload)
    return VerifiedIdentity(
        user_id=7,
        username="alice",
        email="a@example.com",
        namespace="public",
        organization_id=1,
        groups=("users", "admin"),
        expires_at=datetime.fromtimestamp(2_000_000_000, tz=timezone.utc),
        issued_at=datetime.fromtimestamp(1_999_990_000, tz=timezone.utc),
        source="token",
        payload=base,
    )


class TestPackedIdentity:
    def test_round_trip_keeps_every_field_and_the_payload(self) -> None:
        original = token_identity(extra={"nested": [1, {"a": 2}]}, flags=("x",))
        back = unpack_identity(pack_identity(original))
        assert back == original
        for name in VerifiedIdentity.__dataclass_fields__:
            assert getattr(back, name) == getattr(original, name), name
        assert back.payload == original.payload
        assert type(back.payload["groups"]) is list
        assert type(back.payload["flags"]) is tuple

    def test_each_unpacked_identity_has_its_own_mutable_values(self) -> None:
        packed = pack_identity(token_identity(extra={"nested": [1]}))
        first, second = unpack_identity(packed), unpack_identity(packed)
        first.payload["groups"].append("hacked")  # type: ignore[attr-defined]
        first.payload["extra"]["nested"].append(2)  # type: ignore[index]
        first.payload["username"] = "mallory"
        assert second.payload["groups"] == ["users", "admin"]
        assert second.payload["extra"] == {"nested": [1]}
        assert unpack_identity(packed).payload["username"] == "alice"

    def test_identity_stays_frozen(self) -> None:
        back = unpack_identity(pack_identity(token_identity()))
        with pytest.raises(AttributeError):
            back.username = "mallory"  # type: ignore[misc]

    def test_repeated_values_are_shared(self) -> None:
        a = pack_identity(token_identity())
        b = pack_identity(token_identity())
        assert a[5] is b[5] or a[5] == b[5]
        assert a[10] is b[10]  # claim names

    def test_common_values_are_bounded(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(identity_module, "_common_strings", {})
        monkeypatch.setattr(identity_module, "_common_groups", {})
        monkeypatch.setattr(identity_module, "COMMON_VALUES_LIMIT", 2)
        shared = common_string("".join(["grp", "-a"]))
        assert common_string("".join(["grp", "-a"])) is shared
        common_string("b")
        late = "".join(["late", "-value"])
        assert common_string(late) is late  # full: returned as is
        assert len(identity_module._common_strings) == 2
        common_groups(["a"])
        common_groups(["b"])
        assert common_groups(["c"]) == ("c",)
        assert len(identity_module._common_groups) == 2


@pytest.mark.django_db
class TestUserRow:
    def user(self) -> Any:
        return get_user_model().objects.create_user("row-user", "r@example.com", "pw")

    def test_build_gives_a_fresh_equal_user_without_a_query(
        self, django_assert_num_queries: Any
    ) -> None:
        user = self.user()
        row = UserRow(user, 1)
        with django_assert_num_queries(0):
            built = row.build()
            again = row.build()
        assert built is not again
        assert built.pk == user.pk
        assert built.username == "row-user"
        assert built._state.adding is False
        assert built._state.db == "default"
        assert built._state is not again._state

    def test_password_is_deferred_and_loads_on_demand(self, django_assert_num_queries: Any) -> None:
        user = self.user()
        built = UserRow(user, 1).build()
        assert "password" in built.get_deferred_fields()
        with django_assert_num_queries(1):
            assert built.password == user.password

    def test_saving_a_built_user_keeps_the_password(self) -> None:
        user = self.user()
        built = UserRow(user, 1).build()
        built.first_name = "Ann"
        built.save()
        fresh = get_user_model().objects.get(pk=user.pk)
        assert fresh.first_name == "Ann"
        assert fresh.password == user.password

    def test_post_init_listeners_still_run(self) -> None:
        seen: list[Any] = []

        def listener(sender: Any, instance: Any, **kwargs: Any) -> None:
            seen.append(instance)

        model = get_user_model()
        post_init.connect(listener, sender=model)
        try:
            row = UserRow(self.user(), 1)
            assert row.fast is False
            seen.clear()
            built = row.build()
        finally:
            post_init.disconnect(listener, sender=model)
        assert seen == [built]

    def test_mutable_values_are_copied(self) -> None:
        user = self.user()
        user.first_name = ["not", "a", "string"]  # stands in for a JSONField value
        row = UserRow(user, 1)
        assert row.copy is True
        first, second = row.build(), row.build()
        first.first_name.append("changed")
        assert second.first_name == ["not", "a", "string"]


@pytest.mark.django_db
class TestPerProcessMemory:
    def test_a_user_saved_inactive_is_refused_at_once(self) -> None:
        token = make_token()
        auth = get_authenticator()
        request = RequestFactory().get("/", HTTP_AUTHORIZATION="Bearer " + token)
        found = auth.authenticate(request)
        assert found is not None
        assert auth.warm("Bearer " + token) is not None
        found.user.is_active = False
        found.user.save()
        assert auth.warm("Bearer " + token) is None

    def test_saving_an_active_user_keeps_its_tokens(self) -> None:
        token = make_token()
        auth = get_authenticator()
        found = auth.authenticate(RequestFactory().get("/", HTTP_AUTHORIZATION="Bearer " + token))
        assert found is not None
        found.user.first_name = "Ann"
        found.user.save()
        assert auth.warm("Bearer " + token) is not None

    def test_a_non_model_user_from_a_custom_mirror_is_handed_out(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        class Plain:
            is_active = True
            is_authenticated = True
            pk = 42

        plain = Plain()
        auth = get_authenticator()
        monkeypatch.setattr(auth, "returning_user", lambda identity: plain)
        token = make_token()
        found = auth.authenticate(RequestFactory().get("/", HTTP_AUTHORIZATION="Bearer " + token))
        assert found is not None
        assert found.user is plain
        warm = auth.warm("Bearer " + token)
        assert warm is not None
        assert warm.user is plain

    def test_bytes_per_remembered_token(self) -> None:
        """The documented bound: at most 1.5 KB per token (each of a different user)."""
        auth = get_authenticator()
        factory = RequestFactory()
        requests = [
            factory.get(
                "/",
                HTTP_AUTHORIZATION="Bearer "
                + make_token(sub=str(5000 + i), username=f"mem{i}", email=f"m{i}@example.com"),
            )
            for i in range(201)
        ]
        auth.authenticate(requests[0])
        before = held_bytes(auth)
        for request in requests[1:]:
            auth.authenticate(request)
        per_token = (held_bytes(auth) - before) / (len(requests) - 1)
        assert len(auth.users) == len(requests)
        assert 500 < per_token <= 1536, per_token


def held_bytes(auth: Any) -> int:
    """Bytes of every object the authenticator's per-process caches reach, each counted once.

    Classes, modules and functions are shared by the whole process and not counted.
    """
    seen: set[int] = set()
    total = 0
    stack: list[Any] = [auth.users, auth.subjects, auth.cache.local]
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, (type, types.ModuleType, types.FunctionType)):
            continue
        seen.add(id(obj))
        total += sys.getsizeof(obj)
        stack.extend(gc.get_referents(obj))
    return total


@pytest.mark.django_db
class TestReadUser:
    def test_one_compiled_query_without_the_password(self) -> None:
        from django.db import connection
        from django.test.utils import CaptureQueriesContext

        user = get_user_model().objects.create_user("reader", "r@example.com", "pw")
        with CaptureQueriesContext(connection) as queries:
            first = read_user(type(user), user.pk)
            second = read_user(type(user), user.pk)
        assert len(queries.captured_queries) == 2
        assert "password" not in queries.captured_queries[1]["sql"]
        assert first.pk == second.pk == user.pk
        assert first is not second
        assert first.get_deferred_fields() == {"password"}
        assert first.password == user.password  # loaded on demand

    def test_a_missing_row_is_none(self) -> None:
        assert read_user(get_user_model(), 987_654) is None

    def test_models_without_a_password_and_the_orm_fallback(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from django.contrib.auth.models import Group

        from keyrunes_django import user_rows

        group = Group.objects.create(name="readers")
        assert read_user(Group, group.pk).name == "readers"
        monkeypatch.setattr(user_rows, "_READS", {})
        monkeypatch.setattr(user_rows, "_compile_read", lambda model, alias: None)
        user = get_user_model().objects.create_user("orm-reader")
        assert read_user(get_user_model(), user.pk).username == "orm-reader"
        assert read_user(get_user_model(), 987_654) is None

    def test_a_manager_with_related_rows_is_not_compiled(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from django.contrib.auth.models import Permission

        from keyrunes_django import user_rows

        manager = Permission._default_manager
        plain = manager.get_queryset
        assert user_rows._compile_read(Permission, "default") is not None
        monkeypatch.setattr(manager, "get_queryset", lambda: plain().select_related("content_type"))
        monkeypatch.setattr(user_rows, "_READS", {})
        assert user_rows._compile_read(Permission, "default") is None
        permission = Permission.objects.first()
        assert read_user(Permission, permission.pk).codename == permission.codename


@pytest.mark.django_db
def test_a_backend_refusing_the_placeholder_reads_through_the_orm(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from django.core.exceptions import EmptyResultSet
    from django.db.models.sql.compiler import SQLCompiler

    from keyrunes_django import user_rows

    def refuse(self: Any, *args: Any, **kwargs: Any) -> Any:
        raise EmptyResultSet

    model = get_user_model()
    user = model.objects.create_user("placeholder")
    monkeypatch.setattr(user_rows, "_READS", {})
    monkeypatch.setattr(SQLCompiler, "as_sql", refuse)
    assert user_rows._compile_read(model, "default") is None
    monkeypatch.undo()
    monkeypatch.setattr(user_rows, "_READS", {(model, "default"): None})
    assert read_user(model, user.pk).username == "placeholder"


def test_compared_fields_match_identity_equality() -> None:
    from dataclasses import replace

    from keyrunes_django.identity import PACKED_COMPARED, compared_fields

    base = token_identity()
    packed = pack_identity(base)
    assert packed[:PACKED_COMPARED] == compared_fields(base)
    same_but_payload = replace(base, payload={"other": 1})
    assert same_but_payload == base
    assert packed[:PACKED_COMPARED] == compared_fields(same_but_payload)
    for change in ({"username": "bob"}, {"groups": ("users",)}, {"source": "remote"}):
        other = replace(base, **change)  # type: ignore[arg-type]
        assert other != base
        assert packed[:PACKED_COMPARED] != compared_fields(other)


def test_recently_used_tokens_keep_their_identity_unpacked() -> None:
    from keyrunes_django.tokens import _HotIdentities, _Memo

    hot = _HotIdentities(2)
    memos = [_Memo(token_identity(username=f"u{i}"), None, 0.0, 0) for i in range(3)]
    first = memos[0].answer(hot).principal
    assert memos[0].unpacked is first
    assert memos[0].answer(hot).principal is first  # no unpacking while hot
    memos[1].answer(hot)
    memos[2].answer(hot)
    assert memos[0].unpacked is None  # the oldest lost its object
    assert memos[2].unpacked is not None
    again = memos[0].answer(hot).principal
    assert again == first
    assert again is not first
    off = _HotIdentities(0)
    memo = _Memo(token_identity(), None, 0.0, 0)
    memo.answer(off)
    assert memo.unpacked is None


@pytest.mark.django_db(transaction=True)
def test_concurrent_requests_with_one_token_get_distinct_users() -> None:
    import threading

    token = make_token()
    auth = get_authenticator()
    assert auth.authenticate(RequestFactory().get("/", HTTP_AUTHORIZATION="Bearer " + token))
    users: list[Any] = []
    start = threading.Barrier(8)

    def request() -> None:
        start.wait()
        found = auth.warm("Bearer " + token)
        assert found is not None
        found.user.first_name = f"thread {threading.get_ident()}"
        users.append(found.user)

    threads = [threading.Thread(target=request) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(users) == 8
    assert len({id(user) for user in users}) == 8
    assert len({user.first_name for user in users}) == 8
    assert auth.warm("Bearer " + token).user.first_name == ""  # type: ignore[union-attr]

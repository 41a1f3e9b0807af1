"""A mirrored user as column values: what a process remembers per user, and its one read.

A process answering bearer requests from memory keeps no model instance per
token: a :class:`UserRow` holds the column values (shared by all tokens of
the user) and builds a new user object for every request, so no two
requests share a mutable user. :func:`read_user` is the one query a
returning user's new token costs, compiled once per model and database.
"""

from __future__ import annotations

import copy
import inspect
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any
from uuid import UUID

from django.core.exceptions import EmptyResultSet
from django.db import connections
from django.db.models import IntegerField
from django.db.models.base import ModelState
from django.db.models.signals import post_init, pre_init

__all__ = ["SameUser", "UserRow", "read_user"]


class UserRow:
    """A mirrored user's column values; every request gets its own user built from them.

    One row is shared by all tokens of a user in a process. Keeping values
    instead of a model instance keeps an entry small and never hands one
    mutable user object to two concurrent requests. The password column is
    left deferred (loaded if something reads it): bearer requests never need
    it, and a process need not hold every user's hash. ``fingerprint`` is
    what the mirror wrote the row from (see
    :meth:`keyrunes_django.tokens.TokenAuthenticator.returning_user`);
    ``revocations_seen`` and ``not_before`` what the authenticator learned of
    the user's revocations (see
    :meth:`~keyrunes_django.tokens.TokenAuthenticator.check_revocation`).
    """

    __slots__ = (
        "copy",
        "db",
        "fast",
        "fingerprint",
        "is_active",
        "model",
        "not_before",
        "pk",
        "revocations_seen",
        "values",
    )

    def __init__(self, user: Any, fingerprint: int) -> None:
        model = type(user)
        self.model = model
        self.db: str | None = user._state.db
        self.values = tuple(getattr(user, name) for name in _kept_names(model))
        self.pk = user.pk
        self.is_active = bool(getattr(user, "is_active", True))
        self.fingerprint = fingerprint
        # What the authenticator last learned of the user's revocations: the
        # not-before, true while its revocation generation is still this one.
        self.revocations_seen = -1
        self.not_before: float | None = None
        # Values of immutable types are shared by every user built from the row;
        # anything else (a JSONField's dict) is copied for each one.
        self.copy = not all(isinstance(v, _IMMUTABLE) for v in self.values)
        # Model.__init__ only stores each value unless a field has a setter or
        # someone listens to pre_init/post_init; then it must run.
        self.fast = (
            _plain_attributes(model)
            and not pre_init.has_listeners(model)
            and not post_init.has_listeners(model)
        )

    def build(self) -> Any:
        """A new user instance with the remembered values (no query)."""
        values = copy.deepcopy(self.values) if self.copy else self.values
        if not self.fast:
            return self.model.from_db(self.db, _kept_names(self.model), values)
        user = _new_object(self.model)
        attributes = dict(zip(_kept_names(self.model), values, strict=True))
        state = attributes["_state"] = ModelState()
        state.db = self.db
        state.adding = False
        user.__dict__ = attributes
        return user


_new_object = object.__new__
_KEPT_NAMES: dict[type, tuple[str, ...]] = {}
_PLAIN: dict[type, bool] = {}


def _kept_names(model: type) -> tuple[str, ...]:
    names = _KEPT_NAMES.get(model)
    if names is None:
        names = _KEPT_NAMES[model] = tuple(
            f.attname
            for f in model._meta.concrete_fields  # type: ignore[attr-defined]
            if f.attname != "password"
        )
    return names


def _plain_attributes(model: type) -> bool:
    """Whether every column of ``model`` is a plain attribute (no descriptor with a setter)."""
    plain = _PLAIN.get(model)
    if plain is None:
        plain = _PLAIN[model] = not any(
            hasattr(inspect.getattr_static(model, name, None), "__set__")
            for name in _kept_names(model)
        )
    return plain


class SameUser:
    """The row interface for a user object that is no model instance: handed out as is."""

    __slots__ = ("is_active", "pk", "user")

    def __init__(self, user: Any) -> None:
        self.user = user
        self.pk = getattr(user, "pk", None)
        self.is_active = bool(getattr(user, "is_active", True))

    def build(self) -> Any:
        return self.user


_IMMUTABLE = (str, int, float, bool, type(None), bytes, datetime, date, time, Decimal, UUID)


#: A primary key no row has, found among the compiled query's parameters.
_PK_PLACEHOLDER = -1_987_654_321  # within every integer column's range
#: (model, database) -> (SQL, its parameters, where the primary key goes), or
#: None where the ORM must build the query each time.
_READS: dict[tuple[type, str], tuple[str, tuple[Any, ...], int] | None] = {}


def read_user(model: Any, pk: Any) -> Any:
    """``model._default_manager.get(pk=pk)`` without the password column; None if gone.

    The SQL is compiled once per model and database; a manager whose query
    is more than a filter on the primary key (related rows, annotations, a
    non-integer key) is asked through the ORM each time instead.
    """
    manager = model._default_manager
    alias = manager.db
    key = (model, alias)
    if key not in _READS:
        _READS[key] = _compile_read(model, alias)
    plan = _READS[key]
    if plan is None:
        return manager.filter(pk=pk).defer(*_deferred(model)).first()
    sql, compiled, position = plan
    params = list(compiled)
    params[position] = int(pk)
    with connections[alias].cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    if row is None:
        return None
    return model.from_db(alias, _kept_names(model), row)


def _deferred(model: Any) -> list[str]:
    return [f.name for f in model._meta.concrete_fields if f.attname == "password"]


def _compile_read(model: Any, alias: str) -> tuple[str, tuple[Any, ...], int] | None:
    if not isinstance(model._meta.pk, IntegerField):
        return None
    queryset = model._default_manager.filter(pk=_PK_PLACEHOLDER).defer(*_deferred(model))
    query = queryset.query
    if query.select_related or query.annotations or query.extra or query.distinct:
        return None
    compiler = query.get_compiler(alias)
    try:
        sql, params = compiler.as_sql()
    except EmptyResultSet:  # a backend that refuses the placeholder: ask the ORM
        return None
    names = tuple(
        getattr(getattr(col, "target", None), "attname", None) for col, _, _ in compiler.select
    )
    positions = [i for i, value in enumerate(params) if value == _PK_PLACEHOLDER]
    if names != _kept_names(model) or len(positions) != 1 or compiler.klass_info is None:
        return None
    if compiler.klass_info.get("related_klass_infos"):
        return None
    return sql, tuple(params), positions[0]

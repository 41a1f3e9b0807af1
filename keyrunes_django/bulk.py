"""Bulk SQL for the sync: a fixed number of statements per chunk of rows.

``bulk_create`` and ``bulk_update`` compile SQL and build objects per row,
which for tens of thousands of users cost more than everything else. These
helpers send one ``executemany`` per statement instead, with values prepared
by each field exactly as the ORM would (``pre_save`` and
``get_db_prep_save``). Lists of values in ``IN`` clauses are split by the
database's parameter limit rather than changing that limit at run time.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from itertools import islice
from typing import Any, TypeVar

from django.contrib.auth.models import Group
from django.db import connections
from django.db.models import Model
from django.db.models.constants import OnConflict

from keyrunes_django.models import MirroredGroup

T = TypeVar("T")

#: Headroom left under the database's parameter limit for a query's other parameters.
_PARAMETER_HEADROOM = 10
#: Values per ``IN`` list on databases without a parameter limit.
_UNLIMITED_BATCH = 10_000


def chunked(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Consecutive lists of at most ``size`` items, read lazily from ``items``."""
    iterator = iter(items)
    while batch := list(islice(iterator, max(1, size))):
        yield batch


def in_batch_size(alias: str) -> int:
    """How many values one ``IN`` list may hold on database ``alias``."""
    limit = connections[alias].features.max_query_params
    return max(1, int(limit) - _PARAMETER_HEADROOM) if limit else _UNLIMITED_BATCH


def _prepared(model: type[Model], names: Sequence[str] | None) -> list[Any]:
    meta = model._meta
    if names is not None:
        return [meta.get_field(name) for name in names]
    return [f for f in meta.concrete_fields if not (f.primary_key and f.auto_created)]


def insert_rows(alias: str, model: type[Model], objs: Sequence[Model]) -> None:
    """INSERT unsaved instances with one ``executemany``; their primary keys stay unset."""
    if not objs:
        return
    connection = connections[alias]
    ops = connection.ops
    fields = _prepared(model, None)
    columns = ", ".join(ops.quote_name(f.column) for f in fields)
    placeholders = ", ".join(["%s"] * len(fields))
    # Identifiers come from the model's meta, quoted; values are parameters.
    sql = (
        f"INSERT INTO {ops.quote_name(model._meta.db_table)} "  # noqa: S608
        f"({columns}) VALUES ({placeholders})"
    )
    rows = [
        tuple(f.get_db_prep_save(f.pre_save(obj, True), connection) for f in fields) for obj in objs
    ]
    with connection.cursor() as cursor:
        cursor.executemany(sql, rows)


def update_rows(
    alias: str, model: type[Model], objs: Sequence[Model], names: Iterable[str]
) -> None:
    """UPDATE the fields ``names`` of saved instances from their in-memory values, one statement."""
    field_names = sorted(set(names))
    if not objs or not field_names:
        return
    connection = connections[alias]
    ops = connection.ops
    meta = model._meta
    fields = _prepared(model, field_names)
    assignments = ", ".join(f"{ops.quote_name(str(f.column))} = %s" for f in fields)
    pk = meta.pk
    assert pk is not None
    sql = (
        f"UPDATE {ops.quote_name(meta.db_table)} SET {assignments} "  # noqa: S608
        f"WHERE {ops.quote_name(str(pk.column))} = %s"
    )
    rows = [
        (
            *(f.get_db_prep_save(f.pre_save(obj, False), connection) for f in fields),
            pk.get_db_prep_value(obj.pk, connection),
        )
        for obj in objs
    ]
    with connection.cursor() as cursor:
        cursor.executemany(sql, rows)


def insert_memberships(
    alias: str, through: type[Model], user_column: str, rows: Sequence[tuple[Any, Any]]
) -> None:
    """Insert (user pk, group pk) rows into the user-groups table, ignoring duplicates."""
    if not rows:
        return
    connection = connections[alias]
    ops = connection.ops
    meta = through._meta
    user_col = str(meta.get_field(user_column).column)  # type: ignore[union-attr]
    group_col = str(meta.get_field("group").column)  # type: ignore[union-attr]
    sql = " ".join(
        part
        for part in (
            ops.insert_statement(on_conflict=OnConflict.IGNORE),
            f"{ops.quote_name(meta.db_table)} ({ops.quote_name(user_col)}, "
            f"{ops.quote_name(group_col)}) VALUES (%s, %s)",
            ops.on_conflict_suffix_sql([], OnConflict.IGNORE, None, None),
        )
        if part
    )
    with connection.cursor() as cursor:
        cursor.executemany(sql, list(rows))


def delete_pks(alias: str, model: type[Model], pks: Sequence[Any]) -> None:
    """DELETE rows by primary key, one statement per parameter-limit batch."""
    for batch in chunked(pks, in_batch_size(alias)):
        model._default_manager.using(alias).filter(pk__in=batch).delete()


def create_groups(alias: str, names: Sequence[str]) -> dict[str, Any]:
    """Create the groups ``names``; their primary keys by name."""
    if not names:
        return {}
    created = Group.objects.using(alias).bulk_create([Group(name=name) for name in names])
    ids = {group.name: group.pk for group in created}
    if any(pk is None for pk in ids.values()):
        # Backends without INSERT ... RETURNING set no ids: read them back.
        ids = {}
        for batch in chunked(names, in_batch_size(alias)):
            ids.update(Group.objects.using(alias).filter(name__in=batch).values_list("name", "pk"))
    return ids


def mark_mirrored(
    alias: str,
    groups: Sequence[tuple[Any, str]],
    *,
    namespace: str,
    organization_id: int,
    now: datetime,
) -> None:
    """Mark (group pk, remote group name) pairs as mirrored, in one statement."""
    insert_rows(
        alias,
        MirroredGroup,
        [
            MirroredGroup(
                group_id=group_id,
                remote_name=remote_name,
                namespace=namespace,
                organization_id=organization_id,
                last_synced_at=now,
            )
            for group_id, remote_name in groups
        ],
    )


def groups_by_name(alias: str, names: Iterable[str]) -> dict[str, tuple[Any, Any]]:
    """Existing groups among ``names``: name -> (pk, MirroredGroup pk or None), batched."""
    found: dict[str, tuple[Any, Any]] = {}
    for batch in chunked(sorted(set(names)), in_batch_size(alias)):
        rows = Group.objects.using(alias).filter(name__in=batch)
        found.update(
            (name, (pk, marker))
            for pk, name, marker in rows.values_list("pk", "name", "keyrunes_mirror__pk")
        )
    return found

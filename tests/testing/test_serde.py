"""The body and query decoder against serde_json 1.0.148 / serde_urlencoded 0.7 rules.

Messages and positions follow serde_json's ``de.rs``/``read.rs`` (error codes,
``peek_error`` = 1-based column of the offending byte, ``error`` = bytes
consumed on the line) and axum 0.8.8's ``Json`` rejection texts.
"""

from __future__ import annotations

import pytest

from keyrunes_django.testing.serde import (
    BodyError,
    ParseIntError,
    QueryError,
    parse_i64,
    read_query_org_id,
    read_struct,
    rust_debug_str,
)

LOGIN = (("identity", "str"), ("password", "str"), ("namespace", "str"))
ALL_KINDS = (
    ("id", "id"),
    ("opt_id", "id?"),
    ("strict", "i64"),
    ("flag", "bool?"),
    ("on", "bool=true"),
    ("names", "strlist?"),
    ("extra", "any?"),
    ("effect", "effect"),
    ("blank", "str?blank"),
)


def error_of(body: bytes, spec: tuple[tuple[str, str], ...] = LOGIN) -> tuple[int, str]:
    with pytest.raises(BodyError) as caught:
        read_struct(body, spec, "LoginApi")
    return caught.value.status, str(caught.value)


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (
            b'{"identity":"a\x01"}',
            400,
            "identity: control character (\\u0000-\\u001F) found while parsing a string "
            "at line 1 column 15",
        ),
        (b'{"identity":"a\\q"}', 400, "identity: invalid escape at line 1 column 16"),
        (b'{"identity":"\\u12G4"}', 400, "identity: invalid escape at line 1 column 18"),
        (
            b'{"identity":"\\udc00"}',
            400,
            "identity: lone leading surrogate in hex escape at line 1 column 19",
        ),
        (
            b'{"identity":"\\ud800x"}',
            400,
            "identity: unexpected end of hex escape at line 1 column 20",
        ),
        (
            b'{"identity":"\\ud800\\u0041"}',
            400,
            "identity: lone leading surrogate in hex escape at line 1 column 25",
        ),
        (b'{"identity":"\xff"}', 400, "identity: invalid unicode code point at line 1 column 15"),
        (b'{"identity":"abc', 400, "identity: EOF while parsing a string at line 1 column 16"),
        (b'{"identity":"a\\', 400, "identity: EOF while parsing a string at line 1 column 15"),
        (b'{"x":01}', 400, "x: invalid number at line 1 column 7"),
        (b'{"x":1.}', 400, "x: invalid number at line 1 column 8"),
        (b'{"x":1.', 400, "x: EOF while parsing a value at line 1 column 7"),
        (b'{"x":1e}', 400, "x: invalid number at line 1 column 8"),
        (b'{"x":1e', 400, "x: EOF while parsing a value at line 1 column 7"),
        (b'{"x":-}', 400, "x: invalid number at line 1 column 7"),
        (b'{"identity":1e999}', 400, "identity: number out of range at line 1 column 17"),
        (b'{"x":1e999,"x":"\\ud800\xff"}', 422, "missing field `identity` at line 1 column 25"),
        (b'{"x":[1,]}', 400, "x: trailing comma at line 1 column 9"),
        (b'{"x":[1 2]}', 400, "x: expected `,` or `]` at line 1 column 9"),
        (b'{"x":[1', 400, "x: EOF while parsing a list at line 1 column 7"),
        (b'{"x":{"a" 1}}', 400, "x: expected `:` at line 1 column 11"),
        (b'{"x":{1:2}}', 400, "x: key must be a string at line 1 column 7"),
        (b'{"x":{"a":1,}}', 400, "x: trailing comma at line 1 column 13"),
        (b'{"x":{"a":1 "b":2}}', 400, "x: expected `,` or `}` at line 1 column 13"),
        (b'{"x":{"a":1', 400, "x: EOF while parsing an object at line 1 column 11"),
        (b'{"x":nul}', 400, "x: expected ident at line 1 column 9"),
        (b'{"x":n', 400, "x: EOF while parsing a value at line 1 column 6"),
        (b'{"x":?}', 400, "x: expected value at line 1 column 6"),
        (b'{"x":', 400, "x: EOF while parsing a value at line 1 column 5"),
        (b'{"x" 1}', 400, "expected `:` at line 1 column 6"),
        (b'{"x":1 "y":2}', 400, "expected `,` or `}` at line 1 column 8"),
        (b'{"x":1', 400, "EOF while parsing an object at line 1 column 6"),
        (b"{1:2}", 400, "key must be a string at line 1 column 2"),
        (b'{"x":1,}', 400, "trailing comma at line 1 column 8"),
        (
            b'{"x":' + b"[" * 200 + b"]" * 200 + b"}",
            422,
            "missing field `identity` at line 1 column 406",
        ),
        (
            b'{"identity":true}',
            422,
            "identity: invalid type: boolean `true`, expected a string at line 1 column 16",
        ),
        (
            b'{"identity":-1.5}',
            422,
            "identity: invalid type: floating point `-1.5`, expected a string at line 1 column 16",
        ),
        (
            b'{"identity":1e20}',
            422,
            "identity: invalid type: floating point `1e20`, expected a string at line 1 column 16",
        ),
        (
            b'{"identity":{}}',
            422,
            "identity: invalid type: map, expected a string at line 1 column 12",
        ),
        (
            b'{"identity":"a\\"\\n\\u0000\\u00e9"}',
            422,
            "missing field `password` at line 1 column 32",
        ),
        (b"null", 422, "invalid type: null, expected struct LoginApi at line 1 column 4"),
        (
            b'["a"]',
            422,
            "invalid length 1, expected struct LoginApi with 3 elements at line 1 column 5",
        ),
        (b'["a",1]', 422, "[1]: invalid type: integer `1`, expected a string at line 1 column 6"),
        (b'["a","b","c",', 400, "trailing characters at line 1 column 13"),
        (b'["a","b","c",]', 400, "trailing comma at line 1 column 14"),
        (b'["a","b","c" "d"]', 400, "trailing characters at line 1 column 14"),
        (b'["a","b","c"', 400, "EOF while parsing a list at line 1 column 12"),
        (b"   ", 400, "EOF while parsing a value at line 1 column 3"),
    ],
)
def test_login_body_errors(body: bytes, status: int, message: str) -> None:
    assert error_of(body) == (status, message)


@pytest.mark.parametrize(
    ("field", "value", "status", "message"),
    [
        ("id", b'""', 422, "id: cannot parse integer from empty string"),
        ("id", b"true", 422, "id: data did not match any variant of untagged enum StringOrInt"),
        ("id", b"9223372036854775808", 422, "id: data did not match any variant"),
        ("id", b'"-9223372036854775809"', 422, "id: number too small to fit in target type"),
        ("strict", b'"1"', 422, 'strict: invalid type: string "1", expected i64'),
        ("strict", b"-0", 422, "strict: invalid type: floating point `-0.0`, expected i64"),
        (
            "strict",
            b"9223372036854775808",
            422,
            "strict: invalid value: integer `9223372036854775808`, expected i64",
        ),
        ("strict", b"[]", 422, "strict: invalid type: sequence, expected i64"),
        ("flag", b'"yes"', 422, 'flag: invalid type: string "yes", expected a boolean'),
        ("on", b"null", 422, "on: invalid type: null, expected a boolean"),
        ("names", b'"a"', 422, 'names: invalid type: string "a", expected a sequence'),
        ("names", b'["a",2]', 422, "names[1]: invalid type: integer `2`, expected a string"),
        ("effect", b'"ALLOW"', 422, "effect: unknown variant `ALLOW`, expected `Allow` or `Deny`"),
        ("effect", b"null", 400, "effect: expected value"),
        ("effect", b'{"Allow":1}', 422, "effect: invalid type: integer `1`, expected unit variant"),
        ("effect", b'{"Allow":null,', 400, "effect: expected value"),
        (
            "effect",
            b"{1:null}",
            422,
            "effect: invalid type: integer `1`, expected variant identifier",
        ),
    ],
)
def test_field_kind_errors(field: str, value: bytes, status: int, message: str) -> None:
    valid = {
        "id": b"1",
        "strict": b"1",
        "effect": b'"Allow"',
    }
    valid[field] = value
    body = b"{" + b",".join(b'"%s":%s' % (k.encode(), v) for k, v in valid.items()) + b"}"
    caught_status, text = error_of(body, ALL_KINDS)
    assert caught_status == status
    assert text.startswith(message), text


def test_depth_limit_applies_to_values_not_to_ignored_fields() -> None:
    """serde_json's ``check_recursion`` (128 levels, the struct included); ``ignore_value``
    has no limit."""
    status, message = error_of(b'{"extra":' + b"[" * 127, ALL_KINDS)
    assert (status, message) == (400, "extra: recursion limit exceeded at line 1 column 136")


def test_every_kind_decodes() -> None:
    body = (
        b'{"id":"+7","opt_id":"","strict":-9223372036854775808,"flag":null,"names":["a"],'
        b'"extra":{"b":[1,2.5,true,null,"x"]},"effect":{"Deny":null},"blank":"  ","ignored":[{}]}'
    )
    assert read_struct(body, ALL_KINDS, "All") == {
        "id": 7,
        "opt_id": None,
        "strict": -(2**63),
        "flag": None,
        "on": True,
        "names": ["a"],
        "extra": {"b": [1, 2.5, True, None, "x"]},
        "effect": "Deny",
        "blank": None,
    }


def test_errors_render_with_axum_prefixes() -> None:
    with pytest.raises(BodyError) as caught:
        read_struct(b"{", LOGIN, "LoginApi")
    assert caught.value.status == 400
    assert caught.value.text == (
        "Failed to parse the request body as JSON: EOF while parsing an object at line 1 column 1"
    )


def test_positions_count_lines_and_bytes() -> None:
    status, message = error_of(b'{\n  "identity": "\xc3\xa9",\n  "password": 1}')
    assert (status, message) == (
        422,
        "password: invalid type: integer `1`, expected a string at line 3 column 15",
    )


@pytest.mark.parametrize(
    ("text", "value"),
    [("0", 0), ("+12", 12), ("-12", -12), ("9223372036854775807", 2**63 - 1)],
)
def test_parse_i64_accepts(text: str, value: int) -> None:
    assert parse_i64(text) == value


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "cannot parse integer from empty string"),
        ("+", "invalid digit found in string"),
        ("-", "invalid digit found in string"),
        (" 1", "invalid digit found in string"),
        ("1_0", "invalid digit found in string"),
        ("\u0661", "invalid digit found in string"),
        ("9223372036854775808", "number too large to fit in target type"),
        ("-9223372036854775809", "number too small to fit in target type"),
    ],
)
def test_parse_i64_refuses(text: str, message: str) -> None:
    with pytest.raises(ParseIntError, match=message):
        parse_i64(text)


def test_query_org_id() -> None:
    assert read_query_org_id("", 1) == 1
    assert read_query_org_id("a=1&&org_id", 1) == 1
    assert read_query_org_id(b"org_id=%2D3", 1) == -3
    with pytest.raises(QueryError) as caught:
        read_query_org_id("org_id=-", 1)
    assert caught.value.text == "Failed to deserialize query string: invalid digit found in string"


def test_rust_debug_quoting() -> None:
    assert rust_debug_str('a"\\\n\r\t\0\x1b\u200bé') == '"a\\"\\\\\\n\\r\\t\\0\\u{1b}\\u{200b}é"'

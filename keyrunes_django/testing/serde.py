"""Request-body and query-string decoding with the server's exact error texts.

The server reads JSON bodies with axum's ``Json`` extractor: serde_json reads
the bytes in one pass straight into the handler's struct (serde derive), and
serde_path_to_error names the field that failed. Errors therefore come in
document order, carry the field path and serde_json's ``at line L column C``
position, and a field error wins over a syntax error further on. This module
reads a body the same way, one struct field at a time, so that the first error
and its text match.

Field kinds (the Rust types and ``deserialize_with`` helpers of the server):

``str``          ``String``
``str?``         ``Option<String>``
``str?blank``    ``Option<String>``, blank values become ``None`` (organization description)
``i64``          ``i64`` (strict JSON integer)
``bool?``        ``Option<bool>``
``bool=true``    ``bool`` defaulting to ``true`` when absent (``null`` is refused)
``id``           integer or numeric string (``deserialize_string_or_number``)
``id?``          the same, optional; ``""`` and ``null`` are ``None``
``strlist?``     ``Option<Vec<String>>``
``any?``         ``Option<serde_json::Value>``
``effect``       the ``Allow``/``Deny`` enum
``email``        ``Email``: a string matching the server's email rule
``password``     ``Password``: a string of at least 8 bytes
"""

from __future__ import annotations

import contextlib
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus

__all__ = [
    "EMAIL_RE",
    "MIN_PASSWORD_LENGTH",
    "BodyError",
    "ParseIntError",
    "QueryError",
    "parse_i64",
    "read_query_org_id",
    "read_struct",
    "rust_debug_str",
]

#: The server's email rule (``src/domain/user.rs:14``). ``\Z``: Rust's ``$`` has
#: no "before a final newline" exception.
EMAIL_RE = re.compile(r"^[\w.+-]+@[\w-]+\.[\w.-]+\Z")
MIN_PASSWORD_LENGTH = 8
I64_MIN, I64_MAX, U64_MAX = -(2**63), 2**63 - 1, 2**64 - 1
_RECURSION_LIMIT = 128
_WHITESPACE = b" \n\t\r"
_ESCAPES = {
    ord('"'): '"',
    ord("\\"): "\\",
    ord("/"): "/",
    ord("b"): "\b",
    ord("f"): "\f",
    ord("n"): "\n",
    ord("r"): "\r",
    ord("t"): "\t",
}


class BodyError(Exception):
    """A rejected body: ``syntax`` (400) or data (422), with axum's text."""

    def __init__(self, message: str, syntax: bool) -> None:
        super().__init__(message)
        self.syntax = syntax

    @property
    def status(self) -> int:
        return 400 if self.syntax else 422

    @property
    def text(self) -> str:
        if self.syntax:
            return f"Failed to parse the request body as JSON: {self}"
        return f"Failed to deserialize the JSON body into the target type: {self}"


class QueryError(Exception):
    """A rejected query string (400)."""

    @property
    def text(self) -> str:
        return f"Failed to deserialize query string: {self}"


class _Error(Exception):
    """A serde_json error being built: message, position (None = fix later), path."""

    def __init__(self, message: str, syntax: bool, at: tuple[int, int] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.syntax = syntax
        self.at = at
        self.path: str | None = None


class ParseIntError(Exception):
    """Rust's ``ParseIntError``; its text is Rust's."""


class _Custom(ParseIntError):
    """A serde ``Error::custom`` raised by a field's own deserializer (no position)."""


class _Container(str):
    """A container met where a scalar was expected ("sequence" or "map"), not consumed."""


@dataclass
class _Number:
    kind: str  # "u64" | "i64" | "f64"
    value: int | float


def parse_i64(text: str) -> int:
    """Rust's ``str::parse::<i64>``: ASCII digits, one optional sign, exact range."""
    digits = text[1:] if text[:1] in ("+", "-") else text
    if not text:
        raise _Custom("cannot parse integer from empty string")
    if not digits or not all("0" <= ch <= "9" for ch in digits):
        raise _Custom("invalid digit found in string")
    value = int(text)
    if value > I64_MAX:
        raise _Custom("number too large to fit in target type")
    if value < I64_MIN:
        raise _Custom("number too small to fit in target type")
    return value


def rust_debug_str(value: str) -> str:
    """``format!("{:?}", s)``: how serde quotes a string in ``invalid type`` errors."""
    out = ['"']
    for ch in value:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\0":
            out.append("\\0")
        elif unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"):
            out.append(f"\\u{{{ord(ch):x}}}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _ryu(value: float) -> str:
    """serde_json's float text (ryu): shortest digits, ``1e20`` style exponents."""
    text = repr(value)
    if "e" in text:
        mantissa, exponent = text.split("e")
        return f"{mantissa}e{int(exponent)}"
    if "inf" in text or "nan" in text:  # pragma: no cover - JSON cannot produce these
        return text
    return text if "." in text else f"{text}.0"


def _unexpected(value: Any) -> str:
    """serde_json's ``JsonUnexpected`` text for a parsed scalar or container marker."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean `{str(value).lower()}`"
    if isinstance(value, _Number):
        if value.kind == "f64":
            return f"floating point `{_ryu(float(value.value))}`"
        return f"integer `{value.value}`"
    if isinstance(value, _Container):
        return str(value)
    return f"string {rust_debug_str(value)}"


class _Reader:
    """serde_json's ``SliceRead`` + ``Deserializer`` over a byte string."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.i = 0
        self.depth = 0
        # serde_json skips unknown fields with ``ignore_value``: no depth limit, no
        # number range, no UTF-8 or surrogate checks.
        self.ignoring = False

    # -- positions ---------------------------------------------------------

    def _position(self, index: int) -> tuple[int, int]:
        start = self.data.rfind(b"\n", 0, index) + 1
        return self.data.count(b"\n", 0, start) + 1, index - start

    def error(self, message: str, syntax: bool = True) -> _Error:
        return _Error(message, syntax, self._position(self.i))

    def peek_error(self, message: str) -> _Error:
        return _Error(message, True, self._position(min(len(self.data), self.i + 1)))

    def fix(self, exc: _Custom | _Error) -> _Error:
        if isinstance(exc, _Error):
            if exc.at is None:
                exc.at = self._position(self.i)
            return exc
        return _Error(str(exc), False, self._position(self.i))

    # -- low level ---------------------------------------------------------

    def peek(self) -> int | None:
        return self.data[self.i] if self.i < len(self.data) else None

    def skip_ws(self) -> int | None:
        while self.i < len(self.data) and self.data[self.i] in _WHITESPACE:
            self.i += 1
        return self.peek()

    def ident(self, rest: bytes) -> None:
        for expected in rest:
            if self.i >= len(self.data):
                raise self.error("EOF while parsing a value")
            got = self.data[self.i]
            self.i += 1
            if got != expected:
                raise self.error("expected ident")

    def string(self) -> str:
        """After the opening quote: the decoded string, closing quote consumed."""
        out: list[str] = []
        start = self.i
        data = self.data
        while True:
            if self.i >= len(data):
                raise self.error("EOF while parsing a string")
            byte = data[self.i]
            if byte == 0x22:
                chunk = data[start : self.i]
                self.i += 1
                out.append(self._utf8(chunk))
                return "".join(out)
            if byte == 0x5C:
                out.append(self._utf8(data[start : self.i]))
                self.i += 1
                out.append(self._escape())
                start = self.i
                continue
            if byte < 0x20:
                self.i += 1
                raise self.error("control character (\\u0000-\\u001F) found while parsing a string")
            self.i += 1

    def _utf8(self, chunk: bytes) -> str:
        try:
            return chunk.decode("utf-8", "replace" if self.ignoring else "strict")
        except UnicodeDecodeError:
            raise self.error("invalid unicode code point") from None

    def _escape(self) -> str:
        if self.i >= len(self.data):
            raise self.error("EOF while parsing a string")
        code = self.data[self.i]
        self.i += 1
        if code in _ESCAPES:
            return _ESCAPES[code]
        if code != ord("u"):
            raise self.error("invalid escape")
        first = self._hex4()
        if self.ignoring:
            return "\ufffd"
        if 0xDC00 <= first <= 0xDFFF:
            raise self.error("lone leading surrogate in hex escape")
        if not 0xD800 <= first <= 0xDBFF:
            return chr(first)
        if self.data[self.i : self.i + 2] != b"\\u":
            self.i = min(len(self.data), self.i + 1)
            raise self.error("unexpected end of hex escape")
        self.i += 2
        second = self._hex4()
        if not 0xDC00 <= second <= 0xDFFF:
            raise self.error("lone leading surrogate in hex escape")
        return chr(0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00))

    def _hex4(self) -> int:
        value = 0
        for _ in range(4):
            if self.i >= len(self.data):
                raise self.error("EOF while parsing a string")
            char = chr(self.data[self.i])
            self.i += 1
            if char not in "0123456789abcdefABCDEF":
                raise self.error("invalid escape")
            value = value * 16 + int(char, 16)
        return value

    def number(self, positive: bool) -> _Number:
        """After an optional ``-``: an integer (u64/i64) or a float, as serde_json reads it."""
        start = self.i
        if self.i >= len(self.data):
            raise self.error("EOF while parsing a value")
        first = self.data[self.i]
        self.i += 1
        if first == ord("0"):
            if self.peek() is not None and 0x30 <= self.data[self.i] <= 0x39:
                raise self.peek_error("invalid number")
        elif not 0x31 <= first <= 0x39:
            raise self.error("invalid number")
        while self.peek() is not None and 0x30 <= self.data[self.i] <= 0x39:
            self.i += 1
        is_float = False
        if self.peek() == ord("."):
            is_float = True
            self.i += 1
            digits = self.i
            while self.peek() is not None and 0x30 <= self.data[self.i] <= 0x39:
                self.i += 1
            if self.i == digits:
                if self.peek() is None:
                    raise self.peek_error("EOF while parsing a value")
                raise self.peek_error("invalid number")
        if self.peek() in (ord("e"), ord("E")):
            is_float = True
            self.i += 1
            if self.peek() in (ord("+"), ord("-")):
                self.i += 1
            if self.peek() is None:
                raise self.error("EOF while parsing a value")
            if not 0x30 <= self.data[self.i] <= 0x39:
                self.i += 1
                raise self.error("invalid number")
            while self.peek() is not None and 0x30 <= self.data[self.i] <= 0x39:
                self.i += 1
        text = self.data[start : self.i].decode("ascii")
        if not is_float:
            value = int(text)
            if positive and value <= U64_MAX:
                return _Number("u64", value)
            if not positive and value == 0:
                return _Number("f64", -0.0)
            if not positive and value <= -I64_MIN:
                return _Number("i64", -value)
        result = float(text)
        if result in (float("inf"), float("-inf")) and not self.ignoring:
            raise self.error("number out of range")
        return _Number("f64", -result if not positive else result)

    # -- generic values ----------------------------------------------------

    def scalar_or_marker(self, byte: int) -> Any:
        """``peek_invalid_type``: consume a scalar, or name a container without consuming it."""
        if byte == ord("n"):
            self.i += 1
            self.ident(b"ull")
            return None
        if byte in (ord("t"), ord("f")):
            self.i += 1
            self.ident(b"rue" if byte == ord("t") else b"alse")
            return byte == ord("t")
        if byte == ord("-"):
            self.i += 1
            return self.number(False)
        if 0x30 <= byte <= 0x39:
            return self.number(True)
        if byte == 0x22:
            self.i += 1
            return self.string()
        if byte == ord("["):
            return _Container("sequence")
        if byte == ord("{"):
            return _Container("map")
        raise self.peek_error("expected value")

    def invalid_type(self, byte: int, expected: str) -> _Error:
        found = self.scalar_or_marker(byte)
        return self.error(f"invalid type: {_unexpected(found)}, expected {expected}", False)

    def any(self) -> Any:
        """``deserialize_any`` into a JSON value (numbers stay ``_Number``)."""
        byte = self.skip_ws()
        if byte is None:
            raise self.peek_error("EOF while parsing a value")
        if byte == ord("["):
            return self._container(b"]", self._seq_items)
        if byte == ord("{"):
            return self._container(b"}", self._map_items)
        return self.scalar_or_marker(byte)

    def _container(self, close: bytes, items: Any) -> Any:
        self.depth += 1
        if self.depth >= _RECURSION_LIMIT and not self.ignoring:
            raise self.peek_error("recursion limit exceeded")
        self.i += 1
        value = items()
        self.depth -= 1
        return value

    def _seq_items(self) -> list[Any]:
        values: list[Any] = []
        while self.next_element(not values):
            values.append(self.any())
        self.end_seq()
        return values

    def _map_items(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        first = True
        while (key := self.next_key(first)) is not None:
            first = False
            self.colon()
            values[key] = self.any()
        self.end_map()
        return values

    def next_element(self, first: bool) -> bool:
        byte = self.skip_ws()
        if byte == ord("]"):
            return False
        if byte == ord(",") and not first:
            self.i += 1
            byte = self.skip_ws()
        elif byte is None:
            raise self.peek_error("EOF while parsing a list")
        elif not first:
            raise self.peek_error("expected `,` or `]`")
        if byte == ord("]"):
            raise self.peek_error("trailing comma")
        if byte is None:
            raise self.peek_error("EOF while parsing a value")
        return True

    def end_seq(self) -> None:
        byte = self.skip_ws()
        if byte == ord("]"):
            self.i += 1
        elif byte == ord(","):
            self.i += 1
            after = self.skip_ws()
            raise self.peek_error("trailing comma" if after == ord("]") else "trailing characters")
        elif byte is None:
            raise self.peek_error("EOF while parsing a list")
        else:
            raise self.peek_error("trailing characters")

    def next_key(self, first: bool) -> str | None:
        byte = self.skip_ws()
        if byte == ord("}"):
            return None
        if byte == ord(",") and not first:
            self.i += 1
            byte = self.skip_ws()
        elif byte is None:
            raise self.peek_error("EOF while parsing an object")
        elif not first:
            raise self.peek_error("expected `,` or `}`")
        if byte == 0x22:
            self.i += 1
            return self.string()
        if byte == ord("}"):
            raise self.peek_error("trailing comma")
        if byte is None:
            raise self.peek_error("EOF while parsing a value")
        raise self.peek_error("key must be a string")

    def colon(self) -> None:
        byte = self.skip_ws()
        if byte == ord(":"):
            self.i += 1
        elif byte is None:
            raise self.peek_error("EOF while parsing an object")
        else:
            raise self.peek_error("expected `:`")

    def end_map(self) -> None:
        byte = self.skip_ws()
        if byte == ord("}"):
            self.i += 1
        elif byte == ord(","):
            raise self.peek_error("trailing comma")
        elif byte is None:
            raise self.peek_error("EOF while parsing an object")
        else:
            raise self.peek_error("trailing characters")

    # -- typed reads -------------------------------------------------------

    def read_str(self) -> str:
        return self.read_str_as("a string")

    def read_i64(self) -> int:
        byte = self.skip_ws()
        if byte is None:
            raise self.peek_error("EOF while parsing a value")
        if byte != ord("-") and not 0x30 <= byte <= 0x39:
            raise self.invalid_type(byte, "i64")
        number = self.scalar_or_marker(byte)
        if number.kind == "f64":
            raise self.error(f"invalid type: {_unexpected(number)}, expected i64", False)
        if number.value > I64_MAX:
            raise self.error(f"invalid value: {_unexpected(number)}, expected i64", False)
        return int(number.value)

    def read_bool(self) -> bool:
        byte = self.skip_ws()
        if byte is None:
            raise self.peek_error("EOF while parsing a value")
        if byte not in (ord("t"), ord("f")):
            raise self.invalid_type(byte, "a boolean")
        return bool(self.scalar_or_marker(byte))

    def is_null(self) -> bool:
        """``deserialize_option``: consume a ``null`` and say so."""
        if self.skip_ws() == ord("n"):
            self.i += 1
            self.ident(b"ull")
            return True
        return False

    def read_strlist(self) -> list[str]:
        byte = self.skip_ws()
        if byte is None:
            raise self.peek_error("EOF while parsing a value")
        if byte != ord("["):
            raise self.invalid_type(byte, "a sequence")
        self.depth += 1
        if self.depth >= _RECURSION_LIMIT:
            raise self.peek_error("recursion limit exceeded")
        self.i += 1
        values: list[str] = []
        while self.next_element(not values):
            try:
                values.append(self.read_str())
            except _Error as exc:
                exc.path = exc.path or f"[{len(values)}]"
                raise
        self.depth -= 1
        self.end_seq()
        return values

    def read_id(self) -> int | str:
        """An untagged ``String | i64``: any JSON value is read before variants are tried."""
        value = self.any()
        if isinstance(value, str):
            return value
        if isinstance(value, _Number) and value.kind != "f64" and value.value <= I64_MAX:
            return int(value.value)
        raise _Custom("data did not match any variant of untagged enum StringOrInt")

    def read_effect(self) -> str:
        """``deserialize_enum`` of ``PolicyEffect``: ``"Allow"`` or ``{"Allow": null}``."""
        byte = self.skip_ws()
        if byte is None:
            raise self.peek_error("EOF while parsing a value")
        if byte not in (0x22, ord("{")):
            raise self.peek_error("expected value")
        self.i += 1
        if byte == ord("{"):
            name = self.read_str_as("variant identifier")
            self.colon()
        else:
            name = self.string()
        if name not in ("Allow", "Deny"):
            raise self.error(f"unknown variant `{name}`, expected `Allow` or `Deny`", False)
        if byte == ord("{"):
            unit = self.skip_ws()
            if unit is None:
                raise self.peek_error("EOF while parsing a value")
            if unit != ord("n"):
                raise self.invalid_type(unit, "unit variant")
            self.i += 1
            self.ident(b"ull")
            after = self.skip_ws()
            if after is None:
                raise self.error("EOF while parsing an object")
            if after != ord("}"):
                raise self.error("expected value")
            self.i += 1
        return name

    def read_str_as(self, expected: str) -> str:
        byte = self.skip_ws()
        if byte is None:
            raise self.peek_error("EOF while parsing a value")
        if byte != 0x22:
            raise self.invalid_type(byte, expected)
        self.i += 1
        return self.string()


def _plain(value: Any) -> Any:
    """A parsed JSON value with numbers as Python ``int``/``float``."""
    if isinstance(value, _Number):
        return value.value
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _read_field(reader: _Reader, kind: str) -> Any:
    optional = kind.endswith("?") or kind.endswith("?blank")
    if optional and reader.is_null():
        return None
    base = kind.split("?")[0].split("=")[0]
    if base in ("str", "email", "password"):
        value: Any = reader.read_str()
        if base == "email" and not EMAIL_RE.match(value):
            raise _Custom("invalid email")
        if base == "password" and len(value.encode()) < MIN_PASSWORD_LENGTH:
            raise _Custom("password too short")
        if kind == "str?blank" and not value.strip():
            return None
        return value
    if base == "i64":
        return reader.read_i64()
    if base == "bool":
        return reader.read_bool()
    if base == "id":
        value = reader.read_id()
        if isinstance(value, str):
            if optional and value == "":
                return None
            return parse_i64(value)
        return value
    if base == "strlist":
        return reader.read_strlist()
    if base == "any":
        return _plain(reader.any())
    if base == "effect":
        return reader.read_effect()
    raise AssertionError(kind)  # pragma: no cover


def _missing(name: str, kind: str) -> Any:
    if kind == "bool=true":
        return True
    if "?" in kind:
        return None
    raise _Custom(f"missing field `{name}`")


def _field(reader: _Reader, name: str, kind: str) -> Any:
    try:
        return _read_field(reader, kind)
    except (_Error, _Custom) as exc:
        error = exc if isinstance(exc, _Error) else _Error(str(exc), False)
        error.path = name + (error.path or "")
        raise error from None


def _visit_map(reader: _Reader, spec: Sequence[tuple[str, str]]) -> dict[str, Any]:
    kinds = dict(spec)
    found: dict[str, Any] = {}
    first = True
    while (key := reader.next_key(first)) is not None:
        first = False
        if key in kinds:
            if key in found:
                raise _Custom(f"duplicate field `{key}`")
            reader.colon()
            found[key] = _field(reader, key, kinds[key])
        else:
            reader.colon()
            reader.ignoring = True
            try:
                reader.any()
            except _Error as exc:
                exc.path = exc.path or key
                raise
            finally:
                reader.ignoring = False
    for name, kind in spec:
        if name not in found:
            found[name] = _missing(name, kind)
    return found


def _visit_seq(reader: _Reader, spec: Sequence[tuple[str, str]], struct: str) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for index, (name, kind) in enumerate(spec):
        if not reader.next_element(index == 0):
            raise _Custom(
                f"invalid length {index}, expected struct {struct} with {len(spec)} elements"
            )
        try:
            found[name] = _read_field(reader, kind)
        except (_Error, _Custom) as exc:
            error = exc if isinstance(exc, _Error) else _Error(str(exc), False)
            error.path = f"[{index}]" + (error.path or "")
            raise error from None
    return found


def _read_top(reader: _Reader, spec: Sequence[tuple[str, str]], struct: str) -> dict[str, Any]:
    byte = reader.skip_ws()
    if byte is None:
        raise reader.peek_error("EOF while parsing a value")
    if byte not in (ord("{"), ord("[")):
        raise reader.invalid_type(byte, f"struct {struct}")
    reader.i += 1
    reader.depth += 1
    try:
        is_map = byte == ord("{")
        result = _visit_map(reader, spec) if is_map else _visit_seq(reader, spec, struct)
    except (_Error, _Custom) as exc:
        # serde_json closes the container before it positions a custom error.
        with contextlib.suppress(_Error):
            reader.end_map() if byte == ord("{") else reader.end_seq()
        raise reader.fix(exc) from None
    reader.end_map() if byte == ord("{") else reader.end_seq()
    return result


def read_struct(data: bytes, spec: Sequence[tuple[str, str]], struct: str) -> dict[str, Any]:
    """Decode ``data`` into the named fields or raise :class:`BodyError`."""
    reader = _Reader(data)
    try:
        result = _read_top(reader, spec, struct)
        if reader.skip_ws() is not None:
            raise reader.peek_error("trailing characters")
    except _Error as exc:
        line, column = exc.at or reader._position(reader.i)
        prefix = f"{exc.path}: " if exc.path else ""
        message = f"{prefix}{exc.message} at line {line} column {column}"
        raise BodyError(message, exc.syntax) from None
    return result


def read_query_org_id(query: bytes | str, default: int) -> int:
    """``Query<OrgIdParam>`` (serde_urlencoded): the ``org_id`` pair, else ``default``."""
    raw = query.decode("latin-1") if isinstance(query, bytes) else query
    value: str | None = None
    for pair in raw.split("&"):
        if not pair:
            continue
        key, _, text = pair.partition("=")
        if _form_decode(key) != "org_id":
            continue
        if value is not None:
            raise QueryError("duplicate field `org_id`")
        value = _form_decode(text)
    if value is None or value == "":
        return default
    try:
        return parse_i64(value)
    except _Custom as exc:
        raise QueryError(str(exc)) from None


def _form_decode(text: str) -> str:
    return unquote_plus(text.encode("latin-1").decode("utf-8", "replace"), errors="replace")

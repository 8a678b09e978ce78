"""The screen every request passes before a controller sees it: bytes a client can send
that no route can honour get a 4xx problem+json with a stable code here, so nothing the
database would refuse (a NUL, a lone surrogate) and nothing that exhausts the parser (deep
nesting) gets further.

- a body on a route must be declared JSON (``application/json`` or ``application/*+json``):
  else 415 ``UNSUPPORTED_MEDIA_TYPE``;
- the body must be UTF-8 without a byte-order mark, one JSON value, no object with a
  repeated key, no ``NaN``/``Infinity``, no integer of more than ``MAX_DIGITS`` digits,
  nested at most ``MAX_DEPTH`` deep: else 400 ``BAD_REQUEST``;
- no string (key or value) in the body, path or query may hold a NUL, another C0 control
  character other than tab, newline and carriage return, or a lone surrogate: else 422
  ``INVALID_CHARACTER`` naming where.

``screen_body`` and ``screen_text`` are pure; ``screen_request`` is the app's
``before_request`` hook (it runs after authentication and the guards, so an anonymous
caller never makes us parse their body).
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import unquote_to_bytes

import msgspec
from litestar import Request

from api.errors import ApiError

#: deepest nesting of arrays and objects any route accepts (the deepest schema is ~4)
MAX_DEPTH = 32
#: longest integer literal accepted (amounts travel as decimal strings)
MAX_DIGITS = 40
_BAD_CHAR = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff]")
#: a \\u escape in JSON text (``_bad_escape`` decides what it stands for)
_ESCAPE = re.compile(r"\\u([0-9a-fA-F]{4})")
#: an escaped colon: the cheap repeated-key count cannot see it (``screen_body``)
_ESCAPED_COLON = re.compile(r"\\u003[aA]")
_ALLOWED_CONTROLS = frozenset({0x09, 0x0A, 0x0D})
#: integers this wide may have more than ``MAX_DIGITS`` digits (``_long`` decides)
_MAX_BITS = int(MAX_DIGITS * 3.32)
_JSON_TYPE = re.compile(r"^application/(?:[\w.+-]+\+)?json\s*(?:;.*)?$", re.IGNORECASE)
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class MalformedBody(ApiError):
    def __init__(self, message: str) -> None:
        super().__init__(400, "BAD_REQUEST", message)


class InvalidCharacter(ApiError):
    def __init__(self, where: str) -> None:
        super().__init__(
            422,
            "INVALID_CHARACTER",
            f"{where} holds a NUL, a control character or a lone surrogate",
            field=where,
        )


def screen_text(value: str, where: str) -> None:
    if _BAD_CHAR.search(value):
        raise InvalidCharacter(where)


def _no_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found = dict(pairs)
    if len(found) != len(pairs):
        seen: set[str] = set()
        repeated = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        raise MalformedBody(f"the key {repeated!r} appears twice in one object")
    return found


def screen_body(raw: bytes) -> None:
    """Raise ``MalformedBody`` or ``InvalidCharacter`` unless ``raw`` is a JSON document
    every route could read (see the module docstring).

    Cheap on the common body (one C-speed parse, a few substring and regex scans): raw
    control characters, ``NaN`` and bad UTF-8 are refused by the parser; escapes are found
    in the text; the exact (slower) checks of depth, integer size and repeated keys run
    only when a scan of the text says they might fail."""
    if raw.startswith(b"\xef\xbb\xbf"):
        raise MalformedBody("the body starts with a byte-order mark")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedBody(f"the body is not UTF-8 (byte {exc.start})") from None
    escaped = "\\u" in text
    if escaped and _bad_escape(text):
        raise InvalidCharacter("body")
    try:
        document = msgspec.json.decode(raw)
    except RecursionError:
        raise MalformedBody(f"the body is nested deeper than {MAX_DEPTH} levels") from None
    except msgspec.DecodeError as exc:
        raise MalformedBody(f"the body is not JSON: {exc}") from None
    keys, colons = _shape(document)
    # every colon of the text is an object member's or a string's: with as many members
    # decoded as that leaves, no key was repeated (a repeat keeps one member)
    if keys + colons != text.count(":") or (escaped and _ESCAPED_COLON.search(text)):
        try:
            json.loads(text, object_pairs_hook=_no_repeats)
        except ValueError as exc:
            raise MalformedBody(f"the body is not JSON: {exc}") from None


def _bad_escape(text: str) -> bool:
    """Whether a real ``\\u`` escape (after an even run of backslashes) stands for a control
    character (but tab, LF, CR) or a surrogate that is not half of a pair."""
    pending_high = -1  # end offset of a high surrogate still waiting for its low half
    for match in _ESCAPE.finditer(text):
        start = match.start()
        run = len(text[:start]) - len(text[:start].rstrip("\\"))
        if run % 2:  # "\\u0000": an escaped backslash, then text
            continue
        code = int(match[1], 16)
        if pending_high >= 0 and (start != pending_high or not 0xDC00 <= code <= 0xDFFF):
            return True  # the high half was not followed by a low one
        if 0xDC00 <= code <= 0xDFFF:
            if pending_high < 0:
                return True  # a low half alone
            pending_high = -1
        elif 0xD800 <= code <= 0xDBFF:
            pending_high = match.end()
        elif code < 0x20 and code not in _ALLOWED_CONTROLS:
            return True
    return pending_high >= 0


def _shape(document: Any) -> tuple[int, int]:
    """The number of object keys in ``document`` and of colons in its strings and keys;
    raises ``MalformedBody`` when it nests deeper than ``MAX_DEPTH`` or holds an integer
    of more than ``MAX_DIGITS`` digits."""
    keys = colons = 0
    stack: list[tuple[Any, int]] = [(document, 0)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            keys += len(value)
            colons += sum(key.count(":") for key in value)
            items: Any = value.values()
        elif isinstance(value, list):
            items = value
        elif isinstance(value, str):
            colons += value.count(":")
            continue
        else:
            if isinstance(value, int) and value.bit_length() > _MAX_BITS and _long(value):
                raise MalformedBody(f"an integer of more than {MAX_DIGITS} digits")
            continue
        if depth >= MAX_DEPTH:
            raise MalformedBody(f"the body is nested deeper than {MAX_DEPTH} levels")
        stack.extend((item, depth + 1) for item in items)
    return keys, colons


def _long(value: int) -> bool:
    return len(str(abs(value))) > MAX_DIGITS


def screen_query(query_string: bytes, path: str) -> None:
    """The raw query string and the decoded path: UTF-8, no NUL or control character."""
    screen_text(path, "path")
    if not query_string:
        return
    try:
        decoded = unquote_to_bytes(query_string.replace(b"+", b" ")).decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedBody("the query string is not UTF-8") from None
    screen_text(decoded, "query")


async def screen_request(request: Request[Any, Any, Any]) -> None:
    """``before_request`` of every route: the query, the content type and the body."""
    screen_query(request.scope.get("query_string", b""), request.scope["path"])
    if request.method not in _BODY_METHODS:
        return
    raw = await request.body()
    if not raw:
        return
    content_type = request.headers.get("content-type", "")
    if not _JSON_TYPE.match(content_type):
        raise ApiError(
            415,
            "UNSUPPORTED_MEDIA_TYPE",
            f"send the body as application/json, not {content_type or 'no content type'!r}",
        )
    screen_body(raw)

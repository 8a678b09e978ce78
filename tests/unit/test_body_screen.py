"""The request-body screen (``api.body.screen_body``): each hostile shape gets its code;
every well-formed document of clean text passes (hypothesis), and so does every text the
standard library writes for it."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from api.body import MAX_DEPTH, InvalidCharacter, MalformedBody, screen_body, screen_query

BAD_400 = [
    b"\xef\xbb\xbf{}", b'{"m": "\xff"}', b"{'a': 1}", b'{"a": NaN}', b'{"m": "a\x00"}',
    b'{"a": 1, "a": 2}', b'{"a": {"b": 1, "b": 2}}', b'{"a": 1, "\\u0061": 2}',
    b'{"a/": 1, "a\\/": 2}', b'{"n": ' + b"1" * 41 + b"}", b'{"n": -' + b"9" * 41 + b"}",
    b'{"n": ' + b"9" * 5000 + b"}", b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1),
    b"[" * 5000 + b"]" * 5000, b'{"a":' * 3000 + b"1" + b"}" * 3000,
]  # fmt: skip
BAD_422 = [
    b'{"m": "a\\u0000b"}', b'{"m": "\\u001f"}', b'{"m": "\\u001a"}', b'{"m": "\\ud83d"}',
    b'{"m": "\\ude00"}', b'{"m": "\\\\\\u0000"}', b'{"m": "x\\ud83dy"}', b'{"\\u0000": 1}',
    b'{"m": "\\ude00\\ud83d"}',
]  # fmt: skip
GOOD = [
    b'{"m": "\\u0009\\u000a\\u000d"}', b'{"m": "\\ud83d\\ude00"}', b'{"m": "\\uD800\\uDC00"}',
    b'{"m": "\\\\u0000"}', "{\"m\": \"\U0001f600 café\"}".encode(), b'{"m": "\\u007f\\u0085"}',
    b"[" * MAX_DEPTH + b"]" * MAX_DEPTH, b'{"n": ' + b"1" * 40 + b"}",
    b'{"n": "' + b"1" * 60 + b'"}', b'{"m": "\\"a\\": 1", "a": 2}',
    b'{"t": "12:00", "u": "http://x"}', b'[{"a": 1}, {"a": 2}]',
]  # fmt: skip


@pytest.mark.parametrize("raw", BAD_400)
def test_malformed_bodies_are_400(raw: bytes) -> None:
    with pytest.raises(MalformedBody):
        screen_body(raw)


@pytest.mark.parametrize("raw", BAD_422)
def test_bad_characters_are_422(raw: bytes) -> None:
    with pytest.raises(InvalidCharacter):
        screen_body(raw)


@pytest.mark.parametrize("raw", GOOD)
def test_clean_bodies_pass(raw: bytes) -> None:
    screen_body(raw)


_clean = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"
                           + "".join(map(chr, range(1, 32)))) | st.sampled_from("\t\n\r:\\\""),
)  # fmt: skip
_documents = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**39), 10**39) | _clean,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_clean, inner, max_size=4),
    max_leaves=20,
)


@given(_documents, st.booleans())
def test_every_clean_document_passes_however_it_is_written(doc: Any, ascii_only: bool) -> None:
    screen_body(json.dumps(doc, ensure_ascii=ascii_only).encode())


@given(_clean, st.sampled_from(["\x00", "\x01", "\x1b", "\ud800", "\udfff"]), _clean)
def test_a_bad_character_anywhere_in_a_string_is_found(a: str, bad: str, b: str) -> None:
    with pytest.raises(InvalidCharacter):
        screen_body(json.dumps({"memo": a + bad + b}).encode())
    with pytest.raises(InvalidCharacter):
        screen_body(json.dumps({a + bad + b: 1}).encode())


def test_queries_and_paths() -> None:
    screen_query(b"limit=5&cursor=abc", "/api/v1/audit")
    for query in (b"a=%00", b"a=%1b"):
        with pytest.raises(InvalidCharacter):
            screen_query(query, "/x")
    for query in (b"a=%ff", b"a=%C0%80", b"a=%ED%A0%80"):
        with pytest.raises(MalformedBody):
            screen_query(query, "/x")
    with pytest.raises(InvalidCharacter):
        screen_query(b"", "/api/v1/accounts/1\x00")

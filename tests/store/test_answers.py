"""A write's answer reuses the JSON its document was sealed as: the same bytes, encoded once."""

from __future__ import annotations

from typing import Any

import pytest

from profile_store.crypto import encode_document
from profile_store.entities.values import Record
from profile_store.handlers import respond, respond_record

META = {"version": "v1", "author": "vtexappkey-x", "creationDate": "2026-01-01T00:00:00+00:00"}


@pytest.mark.parametrize(
    "doc",
    [
        {},
        {"firstName": "Zoë", "email": "z@example.com", "note": 'quote " and \\ and \n'},
        {"n": 1, "f": 2.5, "big": 10**30, "t": True, "none": None, "tags": ["a", "日本"]},
        {"nested": {"list": [{"x": [1, {"y": "\u2028"}]}]}, "emoji": "\U0001f600"},
    ],
)
@pytest.mark.parametrize("status", [200, 201])
def test_spliced_answer_is_the_encoded_body(doc: dict[str, Any], status: int) -> None:
    plain = respond(Record("p-1", doc, META).body(), status)
    spliced = respond_record(Record("p-1", doc, META, encode_document(doc)), status)
    assert spliced.body == plain.body
    assert (spliced.status, spliced.content_type, spliced.charset) == (
        plain.status,
        plain.content_type,
        plain.charset,
    )


def test_a_record_without_its_json_is_encoded_as_before() -> None:
    doc = {"firstName": "A"}
    assert (
        respond_record(Record("p-1", doc, META)).body
        == respond(Record("p-1", doc, META).body()).body
    )

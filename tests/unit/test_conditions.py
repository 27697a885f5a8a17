"""Conditional requests: AWS's precedence rules, ETag lists and weak tags, HTTP dates."""

from __future__ import annotations

from email.utils import formatdate

import pytest
from hypothesis import given
from hypothesis import strategies as st

from s3orch.s3.conditions import (
    ANY,
    KEY_MISSING,
    EntityTag,
    WriteConditions,
    check_copy_source_conditions,
    check_read_conditions,
    normalize_etag,
    parse_etag_list,
    parse_http_date,
    parse_write_conditions,
)
from s3orch.s3.errors import (
    NoSuchKey,
    NotModified,
    PreconditionFailed,
)

ETAG = '"d41d8cd98f00b204e9800998ecf8427e"'
BARE = "d41d8cd98f00b204e9800998ecf8427e"
LM = 1_700_000_000.75  # Last-Modified, with a fraction the HTTP date cannot carry
NOW = LM + 86_400


def date(ts: float) -> str:
    return formatdate(ts, usegmt=True)


BEFORE = date(LM - 60)
AT = date(LM)  # same second as LM: "not modified since", "unmodified since"
AFTER = date(LM + 60)


def read(**headers: str) -> None:
    check_read_conditions(
        {k.replace("_", "-"): [v] for k, v in headers.items()}, ETAG, LM, now=NOW
    )


def outcome(**headers: str) -> int:
    try:
        read(**headers)
    except NotModified:
        return 304
    except PreconditionFailed:
        return 412
    return 200


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 200),
        ({"If_Match": ETAG}, 200),
        ({"If_Match": BARE}, 200),
        ({"If_Match": '"other"'}, 412),
        ({"If_Match": "*"}, 200),
        ({"If_Match": f'"a", {ETAG}, "b"'}, 200),
        ({"If_Match": f"W/{ETAG}"}, 412),  # strong comparison
        ({"If_Unmodified_Since": AFTER}, 200),
        ({"If_Unmodified_Since": AT}, 200),
        ({"If_Unmodified_Since": BEFORE}, 412),
        ({"If_None_Match": ETAG}, 304),
        ({"If_None_Match": BARE}, 304),
        ({"If_None_Match": f"W/{ETAG}"}, 304),  # weak comparison
        ({"If_None_Match": '"other"'}, 200),
        ({"If_None_Match": "*"}, 304),
        ({"If_None_Match": f'"x",{ETAG}'}, 304),
        ({"If_Modified_Since": BEFORE}, 200),
        ({"If_Modified_Since": AT}, 304),
        ({"If_Modified_Since": AFTER}, 304),
        # AWS: If-Match true + If-Unmodified-Since false -> 200
        ({"If_Match": ETAG, "If_Unmodified_Since": BEFORE}, 200),
        ({"If_Match": '"other"', "If_Unmodified_Since": AFTER}, 412),
        # AWS: If-None-Match false + If-Modified-Since true -> 304
        ({"If_None_Match": ETAG, "If_Modified_Since": BEFORE}, 304),
        # If-None-Match present and true: If-Modified-Since is ignored
        ({"If_None_Match": '"other"', "If_Modified_Since": AFTER}, 200),
        # 412 conditions are evaluated before 304 ones
        ({"If_Match": '"other"', "If_None_Match": ETAG}, 412),
        ({"If_Unmodified_Since": BEFORE, "If_None_Match": ETAG}, 412),
        ({"If_Unmodified_Since": BEFORE, "If_Modified_Since": AFTER}, 412),
        ({"If_Match": ETAG, "If_None_Match": ETAG}, 304),
        # unparsable dates are ignored
        ({"If_Modified_Since": "yesterday"}, 200),
        ({"If_Unmodified_Since": "not a date"}, 200),
        # a future If-Modified-Since is ignored (RFC 9110 13.1.3)
        ({"If_Modified_Since": date(NOW + 3600)}, 200),
        # empty lists do not count as a condition
        ({"If_Match": ""}, 200),
        ({"If_None_Match": " , "}, 200),
    ],
)
def test_read_condition_matrix(headers: dict[str, str], status: int) -> None:
    assert outcome(**headers) == status


def test_header_names_are_case_insensitive_and_repeats_form_a_list() -> None:
    with pytest.raises(NotModified):
        check_read_conditions({"iF-nOnE-mAtCh": ['"a"', ETAG]}, ETAG, LM, now=NOW)


def test_stored_etag_may_be_quoted_or_not() -> None:
    check_read_conditions({"If-Match": [ETAG]}, BARE, LM, now=NOW)
    with pytest.raises(NotModified):
        check_read_conditions({"If-None-Match": [BARE]}, ETAG, LM, now=NOW)


def test_multipart_etags_compare_whole() -> None:
    etag = '"0123456789abcdef0123456789abcdef-3"'
    check_read_conditions({"If-Match": [etag]}, etag, LM, now=NOW)
    with pytest.raises(PreconditionFailed):
        check_read_conditions({"If-Match": [etag.replace("-3", "")]}, etag, LM, now=NOW)


def test_last_modified_compares_at_second_granularity() -> None:
    # LM = ...000.75 and the client echoes the Last-Modified it saw (...000)
    with pytest.raises(NotModified):
        check_read_conditions({"If-Modified-Since": [date(int(LM))]}, ETAG, LM, now=NOW)
    check_read_conditions({"If-Unmodified-Since": [date(int(LM))]}, ETAG, LM, now=NOW)


def test_if_modified_since_exactly_now_is_honoured() -> None:
    with pytest.raises(NotModified):
        check_read_conditions(
            {"If-Modified-Since": [date(LM + 1)]}, ETAG, LM, now=LM + 1
        )


@pytest.mark.parametrize(
    "value",
    [
        "Sun, 06 Nov 1994 08:49:37 GMT",  # IMF-fixdate
        "Sunday, 06-Nov-94 08:49:37 GMT",  # RFC 850
        "Sun Nov  6 08:49:37 1994",  # asctime
    ],
)
def test_http_date_forms(value: str) -> None:
    assert parse_http_date(value) == 784111777


@pytest.mark.parametrize(
    "value", [None, "", "garbage", "Sun, 99 Nov 1994 08:49:37 GMT"]
)
def test_bad_http_dates(value: str | None) -> None:
    assert parse_http_date(value) is None


def copy_outcome(**headers: str) -> int:
    try:
        check_copy_source_conditions(
            {
                "x-amz-copy-source-" + k.replace("_", "-"): [v]
                for k, v in headers.items()
            },
            ETAG,
            LM,
            now=NOW,
        )
    except PreconditionFailed:
        return 412
    return 200


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 200),
        ({"if_match": ETAG}, 200),
        ({"if_match": '"x"'}, 412),
        ({"if_none_match": ETAG}, 412),
        ({"if_none_match": '"x"'}, 200),
        ({"if_modified_since": AFTER}, 412),
        ({"if_modified_since": BEFORE}, 200),
        ({"if_unmodified_since": BEFORE}, 412),
        # AWS: copy-source-if-match true + if-unmodified-since false -> copies
        ({"if_match": ETAG, "if_unmodified_since": BEFORE}, 200),
        # AWS: copy-source-if-none-match false + if-modified-since true -> 412
        ({"if_none_match": ETAG, "if_modified_since": BEFORE}, 412),
    ],
)
def test_copy_source_conditions_fail_with_412(
    headers: dict[str, str], status: int
) -> None:
    assert copy_outcome(**headers) == status


def test_copy_source_conditions_ignore_plain_if_headers() -> None:
    check_copy_source_conditions({"If-Match": ['"x"']}, ETAG, LM, now=NOW)


def test_parse_etag_list_forms() -> None:
    assert parse_etag_list("*") == ANY
    assert parse_etag_list(' "a" , W/"b",c, "d,e" ') == [
        EntityTag("a"),
        EntityTag("b", weak=True),
        EntityTag("c"),
        EntityTag("d,e"),
    ]
    assert parse_etag_list('"unterminated') == [EntityTag("unterminated")]
    assert parse_etag_list('"a", *') == ANY
    assert normalize_etag(' W/"x" ') == "x"


etag_text = st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0x7E, blacklist_characters='"'),
    min_size=1,
    max_size=40,
)


@given(st.lists(st.tuples(etag_text, st.booleans()), min_size=1, max_size=6))
def test_etag_lists_round_trip(tags: list[tuple[str, bool]]) -> None:
    header = ", ".join(("W/" if weak else "") + f'"{opaque}"' for opaque, weak in tags)
    assert parse_etag_list(header) == [EntityTag(o, w) for o, w in tags]


@given(st.text(max_size=80))
def test_etag_list_parser_never_crashes(value: str) -> None:
    result = parse_etag_list(value)
    assert result == ANY or all(isinstance(t, EntityTag) for t in result)


# ---- conditional writes ----------------------------------------------------


def test_write_conditions_parse_every_form_of_if_match_and_if_none_match() -> None:
    assert parse_write_conditions({}) == WriteConditions()
    assert not parse_write_conditions({}).active
    assert parse_write_conditions({"If-None-Match": ["*"]}) == WriteConditions(None, ("*",))
    assert parse_write_conditions({"if-match": [ETAG]}) == WriteConditions((BARE,), None)
    assert parse_write_conditions({"If-Match": ["*"]}) == WriteConditions(("*",), None)
    assert parse_write_conditions({"If-None-Match": [ETAG]}) == WriteConditions(None, (BARE,))
    assert parse_write_conditions({"If-Match": ['"a", W/"b", c']}) == WriteConditions(("a", "b", "c"), None)
    assert parse_write_conditions({"If-Match": [""]}) == WriteConditions()  # empty: absent
    both = parse_write_conditions({"If-Match": ['"a"'], "If-None-Match": ['"b"']})
    assert both == WriteConditions(("a",), ("b",)) and both.active


def test_if_none_match_star_refuses_an_existing_key_only() -> None:
    star = WriteConditions(None, ("*",))
    star.check(None)
    with pytest.raises(PreconditionFailed) as info:
        star.check(ETAG)
    assert info.value.fields == {"Condition": "If-None-Match"}


def test_if_match_etag_needs_the_key_with_that_etag() -> None:
    cond = WriteConditions((BARE,), None)
    cond.check(ETAG)
    cond.check(BARE)
    with pytest.raises(PreconditionFailed) as info:
        WriteConditions(("other",), None).check(ETAG)
    assert (info.value.status, info.value.fields) == (412, {"Condition": "If-Match"})
    with pytest.raises(NoSuchKey):
        cond.check(None)


def test_if_match_star_needs_the_key_to_exist() -> None:
    WriteConditions(("*",), None).check(ETAG)
    with pytest.raises(NoSuchKey) as info:
        WriteConditions(("*",), None).check(None)
    assert info.value.status == 404


def test_if_none_match_etag_refuses_only_that_etag() -> None:
    cond = WriteConditions(None, (BARE, "other"))
    cond.check(None)
    cond.check('"third"')
    with pytest.raises(PreconditionFailed) as info:
        cond.check(ETAG)
    assert info.value.fields == {"Condition": "If-None-Match"}


def test_if_match_is_evaluated_before_if_none_match() -> None:
    cond = WriteConditions(("other",), ("*",))
    assert cond.violation(ETAG) == "If-Match"
    assert cond.violation(None) == KEY_MISSING
    assert WriteConditions((BARE,), ("*",)).violation(ETAG) == "If-None-Match"


def test_write_conditions_round_trip_through_json() -> None:
    for cond in (
        WriteConditions(),
        WriteConditions(("*",), None),
        WriteConditions(None, ("*",)),
        WriteConditions(("a", "b"), ("c",)),
    ):
        assert WriteConditions.from_json(cond.to_json()) == cond
    assert WriteConditions().to_json() is None
    # The form the schema migration writes for intents of the previous version.
    legacy = '{"if_match" : ["abc"], "if_none_match" : null}'
    assert WriteConditions.from_json(legacy) == WriteConditions(("abc",), None)


@given(st.text(max_size=60), st.text(max_size=60))
def test_write_condition_parser_never_raises(match: str, none_match: str) -> None:
    parsed = parse_write_conditions({"if-match": [match], "if-none-match": [none_match]})
    assert parsed.violation(None) in (None, KEY_MISSING)
    assert parsed.violation("x") in (None, "If-Match", "If-None-Match")


def test_requests_without_if_headers_are_unconditional_whatever_the_name_case() -> None:
    check_read_conditions({"x-amz-date": ["x"], "range": ["bytes=0-1"]}, ETAG, LM, now=NOW)
    assert parse_write_conditions({"content-length": ["1"]}) == WriteConditions()
    assert parse_write_conditions({"IF-NONE-MATCH": ["*"]}) == WriteConditions(None, ("*",))
    with pytest.raises(PreconditionFailed):
        check_read_conditions({"IF-MATCH": ['"other"']}, ETAG, LM, now=NOW)

"""The private-ACL-only policy: what is accepted (it changes nothing) and what is 501."""

from __future__ import annotations

import pytest

from s3orch.s3 import errors, xml
from s3orch.s3.acl import check_acl_document, check_acl_headers, has_acl_headers

OWNER = "s3orch"


def _doc_with(extra_grant: str = "", owner: str = OWNER) -> bytes:
    body = xml.access_control_policy(owner, owner)
    return body.replace(b"</AccessControlList>", extra_grant.encode() + b"</AccessControlList>")


@pytest.mark.parametrize(
    "headers",
    [{}, {"x-amz-acl": ["private"]}, {"x-amz-acl": ["bucket-owner-full-control"]}, {"x-amz-acl": ["  Private "]},
     {"x-amz-acl": [""]}],
)
def test_private_acl_headers_are_accepted(headers: dict[str, list[str]]) -> None:
    check_acl_headers(headers)


@pytest.mark.parametrize(
    "headers",
    [
        {"x-amz-acl": ["public-read"]},
        {"x-amz-acl": ["authenticated-read"]},
        {"x-amz-grant-read": ['uri="http://acs.amazonaws.com/groups/global/AllUsers"']},
        {"x-amz-grant-full-control": ['id="someone"']},
    ],
)
def test_other_acl_headers_are_not_implemented(headers: dict[str, list[str]]) -> None:
    assert has_acl_headers(headers)
    with pytest.raises(errors.NotImplementedError_):
        check_acl_headers(headers)


def test_blank_acl_headers_ask_for_nothing() -> None:
    assert not has_acl_headers({"x-amz-acl": [""], "x-amz-grant-read": [" "]})


def test_the_document_we_serve_is_accepted_back() -> None:
    check_acl_document(xml.access_control_policy(OWNER, OWNER), OWNER)


@pytest.mark.parametrize(
    "document",
    [
        _doc_with(
            '<Grant><Grantee xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:type="Group">'
            "<URI>http://acs.amazonaws.com/groups/global/AllUsers</URI></Grantee>"
            "<Permission>READ</Permission></Grant>"
        ),
        _doc_with(owner="someone-else"),
        xml.access_control_policy(OWNER, OWNER).replace(b"FULL_CONTROL", b"READ"),
        b'<AccessControlPolicy xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><AccessControlList/>'
        b"</AccessControlPolicy>",
    ],
    ids=["public-read-grant", "other-owner", "owner-read-only", "no-grants"],
)
def test_other_acl_documents_are_not_implemented(document: bytes) -> None:
    with pytest.raises(errors.NotImplementedError_):
        check_acl_document(document, OWNER)


@pytest.mark.parametrize("document", [b"not xml", b"<Tagging/>", b'<!DOCTYPE x [<!ENTITY a "b">]><AccessControlPolicy/>'])
def test_malformed_acl_documents_are_malformed_xml(document: bytes) -> None:
    with pytest.raises(errors.MalformedXML):
        check_acl_document(document, OWNER)

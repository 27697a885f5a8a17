"""S3 XML documents: hand-built responses and size-checked, defused request parsing.

Responses (``common`` building blocks, ``listings``, ``responses``) are built as
strings, in AWS's element order, with every text value escaped, so what we emit
is exactly what botocore and the other SDKs parse (tests prove it with botocore's
own parser).  Request bodies (``requests``) are parsed with defusedxml, refusing
DTDs and entities outright and anything over a byte cap, so a hostile body costs
bounded memory and answers 400 MalformedXML.

This package only re-exports; import from ``s3orch.s3.xml``.
"""

from __future__ import annotations

from s3orch.s3.tagging import MAX_OBJECT_TAGS, validate_tags
from s3orch.s3.xml.common import (
    NS,
    ObjectIdentifier,
    Owner,
    Timestamp,
    escape_text,
    iso8601,
    quote_etag,
    unquote_etag,
    url_encode,
)
from s3orch.s3.xml.listings import (
    ListEntry,
    PartEntry,
    UploadEntry,
    list_buckets,
    list_multipart_uploads,
    list_object_versions,
    list_objects_v1,
    list_objects_v2,
    list_parts,
)
from s3orch.s3.xml.requests import (
    ACL_MAX_BYTES,
    COMPLETE_MULTIPART_MAX_BYTES,
    DELETE_OBJECTS_MAX_BYTES,
    MAX_BUCKET_TAGS,
    MAX_DELETE_KEYS,
    TAGGING_MAX_BYTES,
    AclGrant,
    CompletedPart,
    parse_access_control_policy,
    parse_complete_multipart,
    parse_complete_multipart_parts,
    parse_delete_objects,
    parse_delete_request,
    parse_tagging,
)
from s3orch.s3.xml.responses import (
    ObjectPartInfo,
    ObjectPartsInfo,
    access_control_policy,
    complete_multipart_upload,
    copy_object_result,
    copy_part_result,
    delete_result,
    empty_configuration,
    initiate_multipart_upload,
    location_constraint,
    object_attributes,
    request_payment,
    tagging,
    versioning_configuration,
)

__all__ = [
    "ACL_MAX_BYTES",
    "AclGrant",
    "COMPLETE_MULTIPART_MAX_BYTES",
    "CompletedPart",
    "DELETE_OBJECTS_MAX_BYTES",
    "ListEntry",
    "MAX_BUCKET_TAGS",
    "MAX_DELETE_KEYS",
    "MAX_OBJECT_TAGS",
    "NS",
    "ObjectIdentifier",
    "ObjectPartInfo",
    "ObjectPartsInfo",
    "Owner",
    "PartEntry",
    "TAGGING_MAX_BYTES",
    "Timestamp",
    "UploadEntry",
    "access_control_policy",
    "complete_multipart_upload",
    "copy_object_result",
    "copy_part_result",
    "delete_result",
    "empty_configuration",
    "escape_text",
    "initiate_multipart_upload",
    "iso8601",
    "list_buckets",
    "list_multipart_uploads",
    "list_object_versions",
    "list_objects_v1",
    "list_objects_v2",
    "list_parts",
    "location_constraint",
    "object_attributes",
    "parse_access_control_policy",
    "parse_complete_multipart",
    "parse_complete_multipart_parts",
    "parse_delete_objects",
    "parse_delete_request",
    "parse_tagging",
    "quote_etag",
    "request_payment",
    "tagging",
    "unquote_etag",
    "url_encode",
    "validate_tags",
    "versioning_configuration",
]

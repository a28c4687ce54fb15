"""Optimistic concurrency on a versioned resource (RFC 9110 8.8.3 and 13.1.1): the version as a
strong entity tag, and `If-Match` checked against it by strong comparison. No header: the last write
wins; `*`: any current version; otherwise one of the listed tags must be the current one, or 412."""

from typing import Any

from fastapi import Header

from dunning.http.problems import PROBLEMS, Problem


def etag(version: int) -> str:
    """The strong entity tag of a resource at `version`: the number, quoted (`"3"`)."""
    return f'"{version}"'


def if_match_header(what: str) -> Any:
    """The `If-Match` request header of a route that changes a versioned `what`, with its OpenAPI text:
    `Annotated[str | None, if_match_header("invoice")]`."""
    doc = (
        f'Optional. The `ETag` the {what} was read with (`"3"`), or `*`: if it has changed since, the'
        f" change is refused with 412 (the current `ETag` in the answer) and nothing is written. Without"
        f" it the last write wins."
    )
    return Header(alias="If-Match", description=doc)


def check_if_match(if_match: str | None, version: int, *, what: str) -> None:
    """Nothing if `if_match` admits `version`; a 412 problem (code `stale_version`, the current
    `ETag` header and `version`) naming `what` ("invoice", "customer") otherwise."""
    if if_match is None:
        return
    tags = [t.strip() for t in if_match.split(",")]
    if "*" in tags or etag(version) in tags:
        return
    message = f"the {what} is at version {version} (ETag {etag(version)}); read it again and retry"
    raise Problem(
        412,
        message,
        type_=PROBLEMS + "stale-version",
        title="Precondition Failed",
        errors=[{"field": "If-Match", "message": message, "code": "stale_version"}],
        headers={"ETag": etag(version)},
        extensions={"version": version},
    )

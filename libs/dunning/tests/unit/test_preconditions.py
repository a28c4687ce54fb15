"""If-Match against a version: strong comparison, `*`, lists, and the 412 problem."""

import pytest

from dunning.http import Problem
from dunning.http.preconditions import check_if_match, etag

pytestmark = pytest.mark.unit


def test_etag_is_the_version_quoted():
    assert etag(3) == '"3"'


@pytest.mark.parametrize(
    ("if_match", "allowed"),
    [
        pytest.param(None, True, id="no-header-last-write-wins"),
        pytest.param("*", True, id="any"),
        pytest.param('"3"', True, id="same"),
        pytest.param(' "1" , "3" ', True, id="one-of-a-list"),
        pytest.param('"2"', False, id="stale"),
        pytest.param('W/"3"', False, id="weak-never-matches"),
        pytest.param("3", False, id="unquoted"),
        pytest.param("", False, id="empty"),
    ],
)
@pytest.mark.parametrize("what", ["invoice", "customer"])
def test_if_match_compares_strongly_with_the_version(if_match, allowed, what):
    if allowed:
        check_if_match(if_match, 3, what=what)
        return
    with pytest.raises(Problem) as refused:
        check_if_match(if_match, 3, what=what)
    problem = refused.value
    assert problem.status == 412 and problem.headers == {"ETag": '"3"'}
    assert problem.errors == [{"field": "If-Match", "message": problem.detail, "code": "stale_version"}]
    assert f"the {what} is at version 3" in problem.detail

"""Named, versioned policies and the segment rules that choose them, through the HTTP API on a real
PostgreSQL: versions with who made each change, the default policy unchanged, rules refusing an
unknown policy, a policy the rules name not deletable."""

import httpx
import pytest

from dunning_scheduler.api import create_app

pytestmark = pytest.mark.integration
FIRM = {
    "description": "Late payers",
    "stages": [{"name": "soft", "offset": "P1D"}, {"name": "firm", "offset": "P5D", "late_fee": {"EUR": "40.00"}}],
}


@pytest.fixture
async def client(pool, settings, h):
    app = create_app(pool, settings)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t", headers={"Authorization": f"Bearer {h.API_KEY}"}
    ) as client:
        yield client


async def test_a_named_policy_is_versioned_and_each_version_says_who_stored_it(client):
    first = await client.put("/v1/policies/pol_firm", json=FIRM, headers={"Dunning-Actor": "anna@acme.example"})
    assert first.status_code == 200, first.text
    body = first.json()
    assert (body["policy_id"], body["version"], body["created"], body["named"]) == ("pol_firm", 1, True, True)
    assert body["changed_by"] == "anna@acme.example"
    assert body["policy"]["stages"][1]["late_fee"] == {"EUR": "40.00"}

    same = await client.put("/v1/policies/pol_firm", json={**FIRM, "id": "pol_firm"})
    assert (same.json()["version"], same.json()["created"]) == (1, False)  # equal: no new version
    second = await client.put("/v1/policies/pol_firm", json={**FIRM, "stages": FIRM["stages"][:1]})
    assert (second.json()["version"], second.json()["changed_by"]) == (2, "api")  # no header: "api"

    versions = (await client.get("/v1/policies/pol_firm/versions")).json()["versions"]
    assert [(v["version"], v["changed_by"], len(v["policy"]["stages"])) for v in versions] == [
        (2, "api", 1),
        (1, "anna@acme.example", 2),
    ]
    one = await client.get("/v1/policies/pol_firm/versions/1")
    assert one.status_code == 200 and len(one.json()["policy"]["stages"]) == 2
    assert (await client.get("/v1/policies/pol_firm/versions/3")).status_code == 404
    latest = (await client.get("/v1/policies/pol_firm")).json()
    assert latest["version"] == 2
    listed = (await client.get("/v1/policies")).json()["policies"]
    assert [(p["policy_id"], p["version"]) for p in listed] == [("pol_firm", 2)]
    # The tenant's default policy is another thing: still the built-in one.
    default = (await client.get("/v1/policy")).json()
    assert (default["source"], default["policy_id"], default["named"]) == ("default", "pol_default", False)


async def test_a_named_policys_body_id_must_be_its_path(client):
    response = await client.put("/v1/policies/pol_firm", json={**FIRM, "id": "pol_other"})
    assert response.status_code == 422
    assert [e["field"] for e in response.json()["errors"]] == ["id"]
    bad = await client.put("/v1/policies/pol_firm", json={**FIRM, "stages": [{"name": "x", "offset": "P1X"}]})
    assert bad.status_code == 422 and "stages.0.offset" in [e["field"] for e in bad.json()["errors"]]
    assert (await client.get("/v1/policies/pol_firm")).status_code == 404


async def test_rules_naming_an_unknown_policy_are_refused_naming_the_rule(client):
    await client.put("/v1/policies/pol_firm", json=FIRM)
    rules = {
        "rules": [
            {"name": "late_payers", "policy_id": "pol_firm", "when": {"average_days_late_min": 15}},
            {"name": "strategic", "policy_id": "pol_gentle", "when": {"tags_any": ["strategic"]}},
        ],
        "default_policy_id": "pol_missing",
    }
    refused = await client.put("/v1/policy-rules", json=rules)
    assert refused.status_code == 422
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert sorted(e["field"] for e in refused.json()["errors"]) == ["default_policy_id", "rules.1.policy_id"]
    assert (await client.get("/v1/policy-rules")).json()["version"] == 0  # nothing stored

    await client.put("/v1/policies/pol_gentle", json={"stages": [{"name": "soft", "offset": "P3D"}]})
    del rules["default_policy_id"]
    stored = await client.put("/v1/policy-rules", json=rules, headers={"Dunning-Actor": "ops"})
    assert stored.status_code == 200, stored.text
    assert (stored.json()["version"], stored.json()["changed_by"], stored.json()["created"]) == (1, "ops", True)
    got = (await client.get("/v1/policy-rules")).json()
    assert [r["name"] for r in got["rules"]["rules"]] == ["late_payers", "strategic"]


async def test_a_policy_the_rules_name_cannot_be_deleted(client):
    await client.put("/v1/policies/pol_firm", json=FIRM)
    await client.put("/v1/policies/pol_spare", json=FIRM)
    await client.put("/v1/policy-rules", json={"rules": [{"name": "all", "policy_id": "pol_firm"}]})
    in_use = await client.delete("/v1/policies/pol_firm")
    assert in_use.status_code == 409 and in_use.json()["errors"][0]["field"] == "policy_id"
    assert (await client.delete("/v1/policies/pol_spare")).status_code == 204
    assert (await client.get("/v1/policies/pol_spare")).status_code == 404
    assert (await client.delete("/v1/policies/pol_spare")).status_code == 404
    assert [p["policy_id"] for p in (await client.get("/v1/policies")).json()["policies"]] == ["pol_firm"]
    # Stored again, it continues its versions.
    back = await client.put("/v1/policies/pol_spare", json=FIRM)
    assert (back.json()["version"], back.json()["created"]) == (2, True)


@pytest.mark.parametrize(
    "rules, field",
    [
        pytest.param({"rules": [{"name": "Bad Name", "policy_id": "pol_firm"}]}, "rules.0.name", id="bad-name"),
        pytest.param({"rules": [{"name": "a", "policy_id": "pol_firm", "when": {"x": 1}}]}, "rules.0.when.x", id="key"),
        pytest.param({"rules": [], "extra": True}, "extra", id="unknown-top-key"),
    ],
)
async def test_invalid_rules_are_problems_naming_the_field(client, rules, field):
    response = await client.put("/v1/policy-rules", json=rules)
    assert response.status_code == 422
    assert field in [e["field"] for e in response.json()["errors"]]

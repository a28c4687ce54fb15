"""A tenant's templates and brand over HTTP against real PostgreSQL: versions, optimistic concurrency,
refusals that change nothing, previews of a real invoice's reminder, and a reminder sent by the
dispatcher (real SMTP) with the tenant's template and brand."""

import asyncio
import contextlib

import httpx
import pytest

from dunning import tenancy
from dunning_notifier.api import ApiDeps, create_app
from dunning_notifier.channels import build_channels
from dunning_notifier.dispatcher import Dispatcher
from dunning_notifier.rendering import Renderer
from dunning_notifier.tenant_templates import TemplatesUnavailable, TenantTemplates

pytestmark = pytest.mark.integration
TENANT, KEY_A, KEY_B = "ten_test_notifier", "dk_testkey_templates_a_0123456789", "dk_testkey_templates_b_0123456789"
PATH = "/v1/templates/firm/email/de"
PARTS = {
    "subject": "Zahlungserinnerung {{ invoice.number }}",
    "text": "Hallo {{ customer.name }},\nbitte zahlen Sie {{ invoice.balance }}.\n{{ brand.signature or sender_name }}",
    "html": "{% extends 'email/_layout.html.j2' %}{% block body %}<p>Hallo {{ customer.name }}</p>{% endblock %}",
}
PNG_1PX = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
)
BRAND = {
    "sender_name": "Brandt Billing",
    "reply_to": "ar@brandt-billing.example",
    "primary_color": "#0b5394",
    "signature": "Brandt Billing GmbH, Buchhaltung",
    "bank": {"account_holder": "Brandt Billing GmbH", "iban": "DE89 3704 0044 0532 0130 00", "bic": "COBADEFFXXX"},
}


def auth(key: str = KEY_A) -> dict:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
async def api(notifier_pool, notifier_settings):
    async with notifier_pool.acquire() as conn:
        await tenancy.provision(conn, TENANT, "Acme", KEY_A)
        await tenancy.provision(conn, "ten_other", "Other", KEY_B)
    settings = notifier_settings(auth_cache_seconds=0, public_url="https://notifier.example")
    app = create_app(ApiDeps(pool=notifier_pool, settings=settings))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        yield client


async def test_every_save_is_a_version_and_a_stale_if_match_changes_nothing(api):
    first = await api.put(PATH, json={"parts": PARTS}, headers=auth())
    assert first.status_code == 200, first.text
    assert first.json()["version"] == 1 and first.headers["ETag"] == '"1"'
    second = await api.put(
        PATH, json={"parts": {**PARTS, "subject": "v2 {{ invoice.number }}"}}, headers={**auth(), "If-Match": '"1"'}
    )
    assert second.json()["version"] == 2

    stale = await api.put(PATH, json={"parts": PARTS}, headers={**auth(), "If-Match": '"1"'})
    assert stale.status_code == 412 and stale.headers["ETag"] == '"2"'
    assert stale.json()["errors"][0]["field"] == "If-Match"
    got = await api.get(PATH, headers=auth())
    assert got.json()["source"] == "tenant" and got.json()["version"] == 2 and got.headers["ETag"] == '"2"'
    assert got.json()["parts"]["subject"] == "v2 {{ invoice.number }}"

    reverted = await api.put(PATH, json={"revert_to": 1}, headers={**auth(), "If-Match": '"2"'})
    assert reverted.json()["version"] == 3 and reverted.json()["parts"] == PARTS

    assert (await api.delete(PATH, headers={**auth(), "If-Match": '"3"'})).status_code == 204
    default = await api.get(PATH, headers=auth())
    assert default.json()["source"] == "default" and default.json()["default_name"] == "email/firm"
    assert default.headers["ETag"] == '"4"' and "{{" in default.json()["parts"]["text"]
    versions = (await api.get(f"{PATH}/versions", headers=auth())).json()
    assert [(v["version"], v["deleted"]) for v in versions["data"]] == [(4, True), (3, False), (2, False), (1, False)]
    assert versions["active_version"] is None
    assert (await api.delete(PATH, headers=auth())).status_code == 404


async def test_the_list_shows_overrides_and_where_the_default_is_used_per_tenant(api):
    await api.put(PATH, json={"parts": PARTS}, headers=auth())
    await api.put("/v1/templates/firm/sms/en", json={"parts": {"text": "Pay {{ invoice.balance }}"}}, headers=auth())
    listed = {(s["key"], s["channel"]): s for s in (await api.get("/v1/templates", headers=auth())).json()["data"]}
    assert [o["locale"] for o in listed["firm", "email"]["overrides"]] == ["de"]
    assert listed["firm", "email"]["default_used"] is False and listed["soft", "email"]["default_used"] is True
    assert listed["firm", "sms"]["overrides"][0]["version"] == 1
    other = {(s["key"], s["channel"]): s for s in (await api.get("/v1/templates", headers=auth(KEY_B))).json()["data"]}
    assert other["firm", "email"]["default_used"] is True
    assert (await api.get(PATH, headers=auth(KEY_B))).json()["source"] == "default"


@pytest.mark.parametrize(
    ("path", "body", "field", "message"),
    [
        pytest.param(
            PATH,
            {"parts": {**PARTS, "html": "<p>\n\n{{ invoice.number }</p>"}},
            "parts.html",
            "html: line 3: unexpected '}'",
            id="syntax",
        ),
        pytest.param(
            PATH,
            {"parts": {**PARTS, "text": "{{ ''.__class__ }}"}},
            "parts.text",
            "text: line 1: access to '__class__'",
            id="sandbox",
        ),
        pytest.param(
            PATH,
            {"parts": {**PARTS, "text": "{{ kunde.name }}"}},
            "parts.text",
            "text: line 1: unknown variable 'kunde'",
            id="unknown",
        ),
        pytest.param(PATH, {"parts": {"text": "x"}}, "parts.subject", "subject: missing", id="missing-part"),
        pytest.param(PATH, {"revert_to": 7}, "revert_to", "no saved version 7", id="revert-unknown"),
        pytest.param("/v1/templates/Firm/email/de", {"parts": PARTS}, "key", "String should match", id="bad-key"),
        pytest.param("/v1/templates/firm/fax/de", {"parts": PARTS}, "channel", "Input should be", id="bad-channel"),
        pytest.param(
            "/v1/templates/firm/email/de_AT", {"parts": PARTS}, "locale", "String should match", id="bad-locale"
        ),
    ],
)
async def test_a_refused_save_names_the_field_and_stores_nothing(api, notifier_pool, path, body, field, message):
    resp = await api.put(path, json=body, headers=auth())
    assert resp.status_code == 422, resp.text
    assert resp.headers["content-type"] == "application/problem+json"
    error = resp.json()["errors"][0]
    assert error["field"] == field and message in error["message"]
    assert await notifier_pool.fetchval("SELECT count(*) FROM template_versions") == 0
    assert await notifier_pool.fetchval("SELECT count(*) FROM template_stamps") == 0


async def test_preview_renders_a_real_invoices_reminder_without_sending_or_saving(
    api, notifier_pool, stage_data, stage_escalated, consume
):
    data = stage_data(stage="firm", locale="de-DE", currency="EUR", amount="1250.00")
    await consume(notifier_pool, stage_escalated(data))
    await api.put("/v1/brand", json=BRAND, headers=auth())

    unsaved = await api.post(
        "/v1/templates/preview", json={"invoice_id": data["invoice_id"], "parts": PARTS}, headers=auth()
    )
    assert unsaved.status_code == 200, unsaved.text
    out = unsaved.json()
    assert out["source"] == "parts" and out["key"] == "firm" and out["locale"] == "de-DE"
    assert out["subject"] == f"Zahlungserinnerung {data['invoice']['number']}"
    assert "1.250,00\xa0€" in out["text"] and "Brandt Billing GmbH, Buchhaltung" in out["text"]
    assert out["html"].startswith("<!DOCTYPE html>")

    shipped = (await api.post("/v1/templates/preview", json={"invoice_id": data["invoice_id"]}, headers=auth())).json()
    assert shipped["source"] == "default" and "Brandt Billing" in shipped["text"]  # sender_name from the brand
    await api.put(PATH, json={"parts": PARTS}, headers=auth())
    mine = (await api.post("/v1/templates/preview", json={"invoice_id": data["invoice_id"]}, headers=auth())).json()
    assert mine["source"] == "tenant" and mine["subject"] == out["subject"]  # de-DE falls back to the tenant's de

    assert await notifier_pool.fetchval("SELECT count(*) FROM template_versions") == 1  # the PUT only
    assert (
        await notifier_pool.fetchval("SELECT state FROM deliveries WHERE invoice_id = $1", data["invoice_id"])
        == "pending"
    )


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        pytest.param(
            {"invoice_id": "inv_01KG3M5P7R9T1V3X5Z7B9D1F3H"}, "invoice_id", "recorded no reminder", id="no-reminder"
        ),
        pytest.param({"key": "firm"}, "invoice_id", "either invoice_id", id="neither"),
        pytest.param({"sample": True}, "key", "required with sample", id="sample-without-key"),
        pytest.param(
            {"sample": True, "key": "firm", "parts": {**PARTS, "text": "{{ x }}"}},
            "parts.text",
            "unknown variable 'x'",
            id="invalid-parts",
        ),
    ],
)
async def test_a_preview_that_cannot_be_made_says_why(api, body, field, message):
    resp = await api.post("/v1/templates/preview", json=body, headers=auth())
    assert resp.status_code == 422, resp.text
    error = resp.json()["errors"][0]
    assert error["field"] == field and message in error["message"]


async def test_a_sample_preview_renders_every_channel(api):
    for channel, parts in (("sms", {"text": "{{ invoice.number }}: {{ invoice.balance }}"}), ("letter", None)):
        body = {"sample": True, "key": "final", "channel": channel, "locale": "de-AT"} | (
            {"parts": parts} if parts else {}
        )
        resp = await api.post("/v1/templates/preview", json=body, headers=auth())
        assert resp.status_code == 200, resp.text
        assert "INV-2026-00031" in resp.json()["text"]


async def test_brand_is_validated_stored_and_its_logo_served_publicly(api):
    bad = await api.put(
        "/v1/brand", json={**BRAND, "bank": {**BRAND["bank"], "iban": "DE00 3704 0044 0532 0130 00"}}, headers=auth()
    )
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "bank.iban"
    assert (await api.get("/v1/brand", headers=auth())).json()["version"] == 0
    stored = await api.put("/v1/brand", json=BRAND, headers=auth())
    assert stored.status_code == 200 and stored.json()["bank"]["iban"] == "DE89370400440532013000"
    stale = await api.put("/v1/brand", json=BRAND, headers={**auth(), "If-Match": '"0"'})
    assert stale.status_code == 412

    wrong = await api.put("/v1/brand/logo", content=PNG_1PX, headers={**auth(), "Content-Type": "image/gif"})
    assert wrong.status_code == 415 and wrong.json()["errors"][0]["field"] == "Content-Type"
    broken = await api.put(
        "/v1/brand/logo", content=b"<svg><script/></svg>", headers={**auth(), "Content-Type": "image/svg+xml"}
    )
    assert broken.status_code == 422
    up = await api.put("/v1/brand/logo", content=PNG_1PX, headers={**auth(), "Content-Type": "image/png"})
    assert up.status_code == 200, up.text
    url = up.json()["logo"]["url"]
    assert url.startswith("https://notifier.example/v1/brand-logos/") and up.json()["sender_name"] == "Brandt Billing"
    public = await api.get(url.removeprefix("https://notifier.example"))  # no key
    assert public.status_code == 200 and public.content == PNG_1PX and public.headers["content-type"] == "image/png"
    assert (await api.delete("/v1/brand/logo", headers=auth())).status_code == 204
    assert (await api.get(url.removeprefix("https://notifier.example"))).status_code == 404
    assert (await api.get("/v1/brand", headers=auth(KEY_B))).json()["sender_name"] is None


@contextlib.asynccontextmanager
async def dispatching_with_tenant_templates(notifier, notifier_settings):
    settings = notifier_settings(smtp_port=notifier.mailserver.smtp_port, template_cache_seconds=0)
    renderer = Renderer(tenant_templates=TenantTemplates(notifier.pool, ttl_seconds=0))
    dispatcher = Dispatcher(notifier.pool, settings, build_channels(settings, renderer))
    task = asyncio.create_task(dispatcher.run())
    try:
        yield dispatcher
    finally:
        dispatcher.stop()
        await asyncio.wait_for(task, timeout=30)


async def test_the_dispatcher_sends_the_tenants_template_with_its_brand(api, notifier, notifier_settings, stage_data):
    await api.put(PATH, json={"parts": PARTS}, headers=auth())
    await api.put("/v1/brand", json=BRAND, headers=auth())
    mine = stage_data(stage="firm", locale="de-AT", currency="EUR", amount="80.00")
    other = stage_data(stage="firm", locale="en-US", tenant_id="ten_other")
    await notifier.receive(mine)
    await notifier.receive(other)

    async with dispatching_with_tenant_templates(notifier, notifier_settings):
        await notifier.wait_state(mine["invoice_id"], "sent")
        await notifier.wait_state(other["invoice_id"], "sent")

    [mail] = await notifier.mail_for(mine["customer"]["email"])
    assert mail["Subject"] == f"Zahlungserinnerung {mine['invoice']['number']}"
    assert mail["From"] == "Brandt Billing <ar@dunning.localhost>" and mail["Reply-To"] == "ar@brandt-billing.example"
    text = mail.get_body(("plain",)).get_content()
    assert "Hallo" in text and "€\xa080,00" in text and "Brandt Billing GmbH, Buchhaltung" in text  # de-AT: € first
    [shipped] = await notifier.mail_for(other["customer"]["email"])  # the other tenant: shipped, unbranded
    assert shipped["Subject"].startswith("Overdue notice") and shipped["Reply-To"] is None
    assert shipped["From"] == "Accounts Receivable <ar@dunning.localhost>"


async def test_the_cache_reloads_a_tenant_only_when_its_stamp_moved_and_within_the_ttl(api, notifier_pool):
    env = Renderer().env
    slow, fresh = TenantTemplates(notifier_pool, ttl_seconds=3600), TenantTemplates(notifier_pool, ttl_seconds=0)
    await api.put(PATH, json={"parts": PARTS}, headers=auth())
    for store in (slow, fresh):
        await store.refresh(TENANT)
        assert store.find(env, TENANT, "email", "firm", "de-AT", "subject") is not None  # de-AT -> the tenant's de
        assert store.find(env, TENANT, "email", "soft", "de-AT", "subject") is None  # not overridden: shipped
        assert store.find(env, "ten_other", "email", "firm", "de", "subject") is None

    assert (await api.delete(PATH, headers=auth())).status_code == 204
    await slow.refresh(TENANT)
    await fresh.refresh(TENANT)
    assert slow.find(env, TENANT, "email", "firm", "de", "subject") is not None  # within its TTL: as loaded
    assert fresh.find(env, TENANT, "email", "firm", "de", "subject") is None  # the stamp moved: reloaded
    await api.put("/v1/brand", json=BRAND, headers=auth())
    await fresh.refresh(TENANT)
    assert fresh.brand(TENANT)["sender_name"] == "Brandt Billing" and slow.brand(TENANT)["sender_name"] is None


async def test_a_database_that_cannot_be_read_makes_the_refresh_fail_not_guess(notifier_pool, infra):
    from dunning.db import create_pool

    pool = await create_pool(infra.database_url, "no_such_schema_here", min_size=1, max_size=1)
    try:
        with pytest.raises(TemplatesUnavailable):
            await TenantTemplates(pool, ttl_seconds=0).refresh(TENANT)
    finally:
        await pool.close()

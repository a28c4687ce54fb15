"""The local SMTP server's greylisting (dunning_tools.stack.mailserver): the first attempt to a
`+greylist` address is refused with a transient 451 and listed; the next one is accepted; other
addresses are never refused."""

import httpx
import pytest
from aiosmtpd.smtp import Envelope

from dunning_tools.stack.mailserver import Greylist, MaildirHandler, make_api

pytestmark = pytest.mark.unit


async def test_a_greylisted_address_is_refused_once_then_accepted(tmp_path):
    greylist = Greylist()
    handler = MaildirHandler(tmp_path / "mail", greylist)
    first, second = Envelope(), Envelope()
    refused = await handler.handle_RCPT(None, None, first, "AP+greylist@example.com", [])
    accepted = await handler.handle_RCPT(None, None, second, "ap+greylist@example.com", [])
    other = await handler.handle_RCPT(None, None, Envelope(), "ap@example.com", [])
    assert refused.startswith("451") and first.rcpt_tos == []
    assert accepted == "250 OK" and second.rcpt_tos == ["ap+greylist@example.com"]
    assert other == "250 OK"
    api = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=make_api(tmp_path / "mail", greylist)), base_url="http://m"
    )
    async with api:
        listed = (await api.get("/greylisted")).json()["refused"]
    assert [r["to"] for r in listed] == ["ap+greylist@example.com"]


async def test_messages_are_listed_as_they_arrive_and_gone_once_cleared(tmp_path):
    handler = MaildirHandler(tmp_path / "mail")
    api = httpx.AsyncClient(transport=httpx.ASGITransport(app=make_api(tmp_path / "mail")), base_url="http://m")

    async def deliver(to: str, subject: str) -> None:
        envelope = Envelope()
        envelope.mail_from = "ar@example.com"
        await handler.handle_RCPT(None, None, envelope, to, [])
        envelope.original_content = f"From: ar@example.com\r\nTo: {to}\r\nSubject: {subject}\r\n\r\nhi\r\n".encode()
        await handler.handle_DATA(None, None, envelope)

    async with api:
        await deliver("a@example.com", "first")
        assert [
            m["subject"] for m in (await api.get("/messages", params={"to": "a@example.com"})).json()["messages"]
        ] == ["first"]
        await deliver("a@example.com", "second")
        await deliver("b@example.com", "other")
        listed = (await api.get("/messages", params={"to": "a@example.com"})).json()["messages"]
        assert sorted(m["subject"] for m in listed) == ["first", "second"]
        assert (await api.get(f"/messages/{listed[0]['id']}")).json() == listed[0]
        await api.delete("/messages")
        assert (await api.get("/messages")).json() == {"count": 0, "messages": []}
        assert (await api.get(f"/messages/{listed[0]['id']}")).status_code == 404
        await deliver("a@example.com", "after")
        assert [m["subject"] for m in (await api.get("/messages")).json()["messages"]] == ["after"]

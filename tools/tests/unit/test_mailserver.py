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

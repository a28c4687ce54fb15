"""A local SMTP server that keeps every message it receives where a person can read it.

Messages land in a Maildir (`<dir>/new/*`, one RFC 5322 file each, readable with any mail client
or `cat`, with trace headers X-Received-At (UTC, when DATA completed), X-Envelope-From and
X-Envelope-To prepended), and an HTTP API lists them as JSON: `GET /messages` (optional `?to=`), `GET
/messages/{id}`, `DELETE /messages`. It is a real SMTP server (aiosmtpd): the notifier talks SMTP
to it exactly as it would to a provider's relay.

Greylisting, for tests and the demo that need a send to wait: the first attempt to an address whose local
part ends in `+greylist` (e.g. `ap+greylist@example.com`) is refused with a transient 451 (the notifier
retries it later, as it would a provider's greylisting); `GET /greylisted` lists those refusals.

Bounces, for tests and the demo of hard bounces: a message to an address whose local part ends in
`+bounce` (e.g. `ap+bounce@example.com`) is accepted (250), and a moment later the server sends a real
RFC 3464 delivery status notification (multipart/report; report-type=delivery-status, `Action:
failed`, `Status: 5.1.1`, the returned message's headers) by SMTP, from the null sender `<>`, to the
message's envelope sender at `--dsn-port` (the notifier's inbound endpoint), as a relay does when the
next hop refuses the mailbox. `GET /bounced` lists the DSNs sent.
"""

import argparse
import asyncio
import email
import email.policy
import mailbox
import subprocess
import sys
from datetime import UTC, datetime
from email.utils import format_datetime, make_msgid
from pathlib import Path

import aiosmtplib
import httpx
import uvicorn
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope
from fastapi import FastAPI, HTTPException

from dunning.http.server import QuietServer
from dunning_tools.stack.procs import spawn, wait_for_port


class Greylist:
    """Addresses refused once (local part ending in `+greylist`), with when (UTC)."""

    def __init__(self) -> None:
        self.refused: dict[str, str] = {}

    def refuses(self, address: str) -> bool:
        key = address.strip().lower()
        if not key.split("@", 1)[0].endswith("+greylist") or key in self.refused:
            return False
        self.refused[key] = datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
        return True


def dsn_message(sender: str, recipient: str, original: bytes, hostname: str = "mail.localhost") -> bytes:
    """An RFC 3464 DSN reporting `recipient` failed (5.1.1) for a message from `sender`: a human part,
    the machine-readable message/delivery-status part, and the returned message's headers."""
    headers = original.split(b"\r\n\r\n", 1)[0].replace(b"\r\n", b"\n").split(b"\n\n", 1)[0]
    headers = b"\r\n".join(line for line in headers.splitlines() if not line.startswith(b"X-Envelope-"))
    boundary = make_msgid("dsn").strip("<>").replace("@", ".")
    now = format_datetime(datetime.now(UTC))
    head = (
        f"From: Mail Delivery System <MAILER-DAEMON@{hostname}>\r\nTo: <{sender}>\r\n"
        f"Subject: Undelivered Mail Returned to Sender\r\nDate: {now}\r\nMessage-ID: {make_msgid('dsn')}\r\n"
        "Auto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n"
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"\r\n\r\n'
        f"--{boundary}\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
        f"Your message could not be delivered to <{recipient}>: the mailbox does not exist.\r\n\r\n"
        f"--{boundary}\r\nContent-Type: message/delivery-status\r\n\r\n"
        f"Reporting-MTA: dns; {hostname}\r\nArrival-Date: {now}\r\n\r\n"
        f"Final-Recipient: rfc822; {recipient}\r\nOriginal-Recipient: rfc822; {recipient}\r\nAction: failed\r\n"
        f"Status: 5.1.1\r\nRemote-MTA: dns; {hostname}\r\n"
        f"Diagnostic-Code: smtp; 550 5.1.1 <{recipient}>: Recipient address rejected: User unknown\r\n"
        f"Last-Attempt-Date: {now}\r\n\r\n"
        f"--{boundary}\r\nContent-Type: text/rfc822-headers\r\n\r\n"
    )
    return head.encode() + headers + f"\r\n\r\n--{boundary}--\r\n".encode()


class Bouncer:
    """Sends the DSNs of `+bounce` addresses to the inbound endpoint at `port` (None: none sent)."""

    def __init__(self, port: int | None, delay: float = 0.3) -> None:
        self.port = port
        self.delay = delay
        self.sent: list[dict[str, str]] = []

    @staticmethod
    def bounces(address: str) -> bool:
        return address.strip().lower().split("@", 1)[0].endswith("+bounce")

    def schedule(self, sender: str, recipient: str, original: bytes) -> None:
        if self.port is not None and sender:
            asyncio.get_running_loop().create_task(self._send(sender, recipient, original))

    async def _send(self, sender: str, recipient: str, original: bytes) -> None:
        await asyncio.sleep(self.delay)
        try:
            async with aiosmtplib.SMTP(hostname="127.0.0.1", port=self.port, timeout=10) as client:
                await client.sendmail("", [sender], dsn_message(sender, recipient, original))
            outcome = "sent"
        except (aiosmtplib.SMTPException, OSError) as exc:
            outcome = f"refused: {exc}"
        at = datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
        self.sent.append({"to": sender, "recipient": recipient, "at": at, "outcome": outcome})
        print(f"dsn {outcome}: {recipient} -> {sender}", flush=True)


class MaildirHandler:
    def __init__(self, directory: Path, greylist: Greylist | None = None, bouncer: Bouncer | None = None):
        self.box = mailbox.Maildir(directory, create=True)
        self.greylist = greylist or Greylist()
        self.bouncer = bouncer or Bouncer(None)

    async def handle_RCPT(self, server, session, envelope: Envelope, address: str, rcpt_options):
        if "@" not in address or address.endswith("@bounce.invalid"):
            return "550 5.1.1 Recipient address rejected"
        if self.greylist.refuses(address):
            return "451 4.7.1 Greylisted, try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session, envelope: Envelope):
        # Stored as received, with the envelope and the receive time (UTC, microseconds: the chaos
        # harness measures lateness with it) prepended as trace headers (no parse/re-serialise: the
        # server must not be the bottleneck of a delivery benchmark).
        received = datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
        trace = (
            f"X-Received-At: {received}\r\nX-Envelope-From: {envelope.mail_from}\r\n"
            f"X-Envelope-To: {', '.join(envelope.rcpt_tos)}\r\n"
        )
        content = envelope.original_content or envelope.content or b""
        raw = content.encode() if isinstance(content, str) else content
        for address in [a for a in envelope.rcpt_tos if self.bouncer.bounces(a)]:
            self.bouncer.schedule(envelope.mail_from or "", address, raw)
        key = self.box.add(trace.encode() + raw)
        return f"250 2.0.0 OK queued as {key}"


def _envelope_to(raw: bytes) -> str | None:
    """The X-Envelope-To trace header this server prepends (one unfolded line), read without parsing
    the message; None if absent (a message not received here)."""
    for line in raw[: raw.find(b"\r\n\r\n")].split(b"\r\n", 3)[:3]:
        if line.startswith(b"X-Envelope-To: "):
            return line[len(b"X-Envelope-To: ") :].decode("utf-8", "replace")
    return None


def _summary(key: str, raw: bytes) -> dict:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    text = msg.get_body(preferencelist=("plain",))
    html = msg.get_body(preferencelist=("html",))
    return {
        "id": key,
        "from": str(msg["From"] or ""),
        "to": str(msg["X-Envelope-To"] or msg["To"] or ""),
        "cc": str(msg["Cc"] or ""),
        "subject": str(msg["Subject"] or ""),
        "date": str(msg["Date"] or ""),
        "message_id": str(msg["Message-ID"] or ""),
        "received_at": str(msg["X-Received-At"] or ""),
        "headers": {k: str(v) for k, v in msg.items() if k.lower().startswith("x-dunning") or k.lower() == "cc"},
        "text": text.get_content() if text is not None else "",
        "html": html.get_content() if html is not None else "",
    }


def make_api(directory: Path, greylist: Greylist | None = None, bouncer: Bouncer | None = None) -> FastAPI:
    app = FastAPI(title="dev mail server", docs_url="/docs")
    refusals = greylist or Greylist()
    dsns = bouncer or Bouncer(None)

    @app.get("/bounced")
    def bounced():
        return {"dsns": dsns.sent}

    # A stored message never changes, so each is read once for its recipients and parsed once, when
    # first asked for: a session's tests (and the benches) leave tens of thousands in one box, and
    # parsing them all again on every GET timed clients out.
    parsed: dict[str, dict] = {}
    recipients: dict[str, str] = {}  # key -> the summary's "to", lowercased

    def box() -> mailbox.Maildir:
        return mailbox.Maildir(directory, create=True)

    def summary(b: mailbox.Maildir, key: str) -> dict:
        item = parsed.get(key)
        if item is None:
            item = parsed[key] = _summary(key, b.get_bytes(key))
            recipients[key] = item["to"].lower()
        return item

    def to_of(b: mailbox.Maildir, key: str) -> str:
        found = recipients.get(key)
        if found is None:
            envelope_to = _envelope_to(b.get_bytes(key))
            found = recipients[key] = envelope_to.lower() if envelope_to is not None else summary(b, key)["to"].lower()
        return found

    @app.get("/messages")
    def list_messages(to: str | None = None):
        b = box()
        out = []
        for key in b.keys():
            try:
                if to is None or to.lower() in to_of(b, key):
                    out.append(summary(b, key))
            except KeyError:  # deleted since the listing
                continue
        return {"count": len(out), "messages": out}

    @app.get("/messages/{key}")
    def get_message(key: str):
        try:
            return summary(box(), key)
        except KeyError:
            raise HTTPException(404, "no such message") from None

    @app.get("/greylisted")
    def greylisted():
        return {"refused": [{"to": to, "at": at} for to, at in refusals.refused.items()]}

    @app.delete("/messages")
    def clear():
        b = box()
        for key in list(b.keys()):
            b.discard(key)
        parsed.clear()
        recipients.clear()
        return {"status": "cleared"}

    return app


def messages_to(api: str, address: str, client: httpx.Client | None = None) -> list[dict]:
    """What the mail server at `api` (its HTTP API) received with exactly `address` among its envelope
    recipients (To or Cc), oldest first."""
    resp = (client or httpx).get(f"{api}/messages", params={"to": address}, timeout=10)
    resp.raise_for_status()
    wanted = address.lower()
    return [m for m in resp.json()["messages"] if wanted in (a.strip().lower() for a in m["to"].split(","))]


def greylisted(api: str, address: str, client: httpx.Client | None = None) -> str | None:
    """When the mail server at `api` refused `address` once (greylisting), else None."""
    resp = (client or httpx).get(f"{api}/greylisted", timeout=10)
    resp.raise_for_status()
    return next((r["at"] for r in resp.json()["refused"] if r["to"] == address.strip().lower()), None)


def start(
    directory: Path, smtp_port: int, http_port: int, log_path: Path, dsn_port: int | None = None
) -> subprocess.Popen:
    """This server as a child process (see procs.spawn), returned once both ports listen; `dsn_port`:
    where the DSNs of `+bounce` addresses go (the notifier's inbound SMTP port)."""
    proc = spawn(
        [
            sys.executable,
            "-m",
            "dunning_tools.stack.mailserver",
            "--dir",
            str(directory),
            "--smtp-port",
            str(smtp_port),
            "--http-port",
            str(http_port),
            *(["--dsn-port", str(dsn_port)] if dsn_port else []),
        ],
        log_path=log_path,
    )
    wait_for_port(smtp_port, proc=proc, what="SMTP server")
    wait_for_port(http_port, proc=proc, what="mail API")
    return proc


async def serve(directory: Path, smtp_port: int, http_port: int, dsn_port: int | None = None) -> None:
    greylist = Greylist()
    bouncer = Bouncer(dsn_port)
    controller = Controller(MaildirHandler(directory, greylist, bouncer), hostname="127.0.0.1", port=smtp_port)
    controller.start()
    try:
        server = QuietServer(
            uvicorn.Config(
                make_api(directory, greylist, bouncer), host="127.0.0.1", port=http_port, log_level="warning"
            )
        )
        await server.serve()
    finally:
        controller.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--smtp-port", type=int, default=1025)
    parser.add_argument("--http-port", type=int, default=8025)
    parser.add_argument("--dsn-port", type=int, default=None, help="where +bounce DSNs go (inbound SMTP)")
    args = parser.parse_args()
    asyncio.run(serve(args.dir, args.smtp_port, args.http_port, args.dsn_port))


if __name__ == "__main__":
    main()

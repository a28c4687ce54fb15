"""A local SMTP server that keeps every message it receives where a person can read it.

Messages land in a Maildir (`<dir>/new/*`, one RFC 5322 file each, readable with any mail client
or `cat`, with trace headers X-Received-At (UTC, when DATA completed), X-Envelope-From and
X-Envelope-To prepended), and an HTTP API lists them as JSON: `GET /messages` (optional `?to=`), `GET
/messages/{id}`, `DELETE /messages`. It is a real SMTP server (aiosmtpd): the notifier talks SMTP
to it exactly as it would to a provider's relay.

Greylisting, for tests and the demo that need a send to wait: the first attempt to an address whose local
part ends in `+greylist` (e.g. `ap+greylist@example.com`) is refused with a transient 451 (the notifier
retries it later, as it would a provider's greylisting); `GET /greylisted` lists those refusals.
"""

import argparse
import asyncio
import email
import email.policy
import mailbox
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import httpx
import uvicorn
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope
from fastapi import FastAPI, HTTPException

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


class MaildirHandler:
    def __init__(self, directory: Path, greylist: Greylist | None = None):
        self.box = mailbox.Maildir(directory, create=True)
        self.greylist = greylist or Greylist()

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
        key = self.box.add(trace.encode() + (content.encode() if isinstance(content, str) else content))
        return f"250 2.0.0 OK queued as {key}"


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


def make_api(directory: Path, greylist: Greylist | None = None) -> FastAPI:
    app = FastAPI(title="dev mail server", docs_url="/docs")
    refusals = greylist or Greylist()

    def box() -> mailbox.Maildir:
        return mailbox.Maildir(directory, create=True)

    @app.get("/messages")
    def list_messages(to: str | None = None):
        out = []
        for key in box().keys():
            raw = box().get_bytes(key)
            item = _summary(key, raw)
            if to is None or to.lower() in item["to"].lower():
                out.append(item)
        return {"count": len(out), "messages": out}

    @app.get("/messages/{key}")
    def get_message(key: str):
        try:
            return _summary(key, box().get_bytes(key))
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


def start(directory: Path, smtp_port: int, http_port: int, log_path: Path) -> subprocess.Popen:
    """This server as a child process (see procs.spawn), returned once both ports listen."""
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
        ],
        log_path=log_path,
    )
    wait_for_port(smtp_port, proc=proc, what="SMTP server")
    wait_for_port(http_port, proc=proc, what="mail API")
    return proc


async def serve(directory: Path, smtp_port: int, http_port: int) -> None:
    greylist = Greylist()
    controller = Controller(MaildirHandler(directory, greylist), hostname="127.0.0.1", port=smtp_port)
    controller.start()
    try:
        server = uvicorn.Server(
            uvicorn.Config(make_api(directory, greylist), host="127.0.0.1", port=http_port, log_level="warning")
        )
        await server.serve()
    finally:
        controller.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--smtp-port", type=int, default=1025)
    parser.add_argument("--http-port", type=int, default=8025)
    args = parser.parse_args()
    asyncio.run(serve(args.dir, args.smtp_port, args.http_port))


if __name__ == "__main__":
    main()

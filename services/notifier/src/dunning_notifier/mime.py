"""A multipart/alternative message (text + HTML), composed directly as bytes.

Why not `email.message.EmailMessage`: building one reminder with it costs about 2.6 ms of CPU
(header objects parsed and refolded, content-manager heuristics), which alone caps a notifier at
~380 messages/s per core; the stdlib's compat32 MIME classes still cost ~1.1 ms. The shape we send
is fixed and simple, so it is written here with the stdlib's encoders (C `binascii.b2a_qp` for the
bodies, `email.header.Header` / `formataddr` for RFC 2047 headers): ~0.1 ms. The unit tests parse
the result back with `email` (policy.default) to hold it to the standard.
"""

import binascii
from collections.abc import Sequence
from email.header import Header
from email.utils import formataddr

CRLF = b"\r\n"


def header_value(value: str, name: str) -> str:
    """One header's value: no CR/LF (no header injection), RFC 2047-encoded if it is not ASCII,
    folded at 78 columns."""
    flat = " ".join(value.replace("\r", " ").replace("\n", " ").split(" "))
    if flat.isascii() and len(name) + len(flat) < 76:
        return flat
    return Header(flat, "us-ascii" if flat.isascii() else "utf-8", header_name=name).encode(linesep="\r\n")


def address_header(name: str, address: str, header: str = "To") -> str:
    """`Name <address>` with the name quoted or RFC 2047-encoded as needed. A non-ASCII address
    (sent with SMTPUTF8) keeps its UTF-8 as is; only the name part is encoded then."""
    name = " ".join(name.split())
    if address.isascii():
        return header_value(formataddr((name, address), charset="utf-8"), header)
    if not name:
        return f"<{address}>"
    display = formataddr((name, "a@b"), charset="utf-8").removesuffix(" <a@b>")
    return f"{display} <{address}>"


def cc_header(addresses: Sequence[str]) -> str:
    """The Cc value: bare addresses, comma-separated, folded one per line when it would not fit in 78
    columns (an address itself is never encoded: a non-ASCII one is sent with SMTPUTF8)."""
    value = ", ".join(addresses)
    return value if len(value) < 74 else ",\r\n ".join(addresses)


def _qp(text: str) -> bytes:
    body = text.replace("\r\n", "\n").replace("\r", "\n").encode("utf-8")
    return binascii.b2a_qp(body, quotetabs=False, istext=True, header=False).replace(b"\n", CRLF)


def compose(headers: list[tuple[str, str]], text: str, html: str, boundary: str) -> bytes:
    """`headers` are (name, already-safe value) pairs (see header_value); `boundary` must not occur
    in the bodies: one starting with "=_" cannot, since quoted-printable always escapes "=" as "=3D"."""
    head = [f"{name}: {value}" for name, value in headers]
    head += ["MIME-Version: 1.0", f'Content-Type: multipart/alternative; boundary="{boundary}"']
    parts = []
    for subtype, body in (("plain", text), ("html", html)):
        parts.append(
            f'--{boundary}\r\nContent-Type: text/{subtype}; charset="utf-8"\r\n'
            "Content-Transfer-Encoding: quoted-printable\r\n\r\n".encode()
            + _qp(body)
            + CRLF
        )
    return ("\r\n".join(head) + "\r\n\r\n").encode("utf-8") + b"".join(parts) + f"--{boundary}--\r\n".encode()

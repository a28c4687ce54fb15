"""A lean HTTP/1.1 load generator for the bench: keep-alive connections, prebuilt requests.

httpx costs about as much CPU per request as the service under test, and on a 2-core machine the
client would then measure itself; this costs a few microseconds a request.
"""

import asyncio
import time


def build_request(method: str, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    head = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {len(body)}"]
    head += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.lower() == "content-length":
            length = int(value)
    body = await reader.readexactly(length) if length else b""
    return status, body


async def run(port: int, requests: list[bytes], concurrency: int = 32) -> tuple[float, dict[int, int], list[bytes]]:
    """Send every request once over `concurrency` connections; returns (seconds, statuses, failures)."""
    pending = iter(requests)
    statuses: dict[int, int] = {}
    failures: list[bytes] = []

    async def worker():
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for request in pending:
                writer.write(request)
                status, body = await _read_response(reader)
                statuses[status] = statuses.get(status, 0) + 1
                if status >= 300 and len(failures) < 5:
                    failures.append(body)
        finally:
            writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - start, statuses, failures

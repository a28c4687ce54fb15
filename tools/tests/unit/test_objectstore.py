"""The local broker's object store (dunning_tools.stack.objectstore) keeps the promises Tansu's engine
relies on: conditional writes refuse a stale or duplicate write, listing by prefix sees exactly the
keys under it, and what was written is read back after the server is started again on the directory."""

import httpx
import pytest

from dunning_tools.stack.objectstore import make_app

pytestmark = pytest.mark.unit


def client(root) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=make_app(root)), base_url="http://store")


async def test_a_create_only_write_succeeds_once(tmp_path):
    async with client(tmp_path) as s:
        first = await s.put("/tansu/clusters/c/meta.json", content=b"{}", headers={"If-None-Match": "*"})
        again = await s.put("/tansu/clusters/c/meta.json", content=b"{ }", headers={"If-None-Match": "*"})
        assert first.status_code == 200 and first.headers["ETag"]
        assert again.status_code == 412
        assert (await s.get("/tansu/clusters/c/meta.json")).content == b"{}"


async def test_an_update_with_a_stale_etag_is_refused(tmp_path):
    async with client(tmp_path) as s:
        v1 = (await s.put("/tansu/w.json", content=b"1")).headers["ETag"]
        v2 = (await s.put("/tansu/w.json", content=b"2", headers={"If-Match": v1})).headers["ETag"]
        stale = await s.put("/tansu/w.json", content=b"3", headers={"If-Match": v1})
        assert v1 != v2
        assert stale.status_code == 412
        assert (await s.get("/tansu/w.json")).content == b"2"
        assert (await s.get("/tansu/w.json", headers={"If-None-Match": v2})).status_code == 304


@pytest.mark.parametrize(
    "prefix,expected",
    [
        pytest.param("t/p/0/records/", ["t/p/0/records/01.batch", "t/p/0/records/02.batch"], id="one-partition"),
        pytest.param(
            "t/p/", ["t/p/0/records/01.batch", "t/p/0/records/02.batch", "t/p/1/records/01.batch"], id="every-partition"
        ),
        pytest.param("t/p/0/rec", ["t/p/0/records/01.batch", "t/p/0/records/02.batch"], id="partial-segment"),
        pytest.param("t/q/", [], id="nothing-there"),
    ],
)
async def test_listing_by_prefix_sees_exactly_the_keys_under_it(tmp_path, prefix, expected):
    async with client(tmp_path) as s:
        for key in ("t/p/0/records/02.batch", "t/p/0/records/01.batch", "t/p/1/records/01.batch", "t/meta.json"):
            await s.put(f"/tansu/{key}", content=key.encode())
        body = (await s.get("/tansu", params={"list-type": "2", "prefix": prefix})).text
        assert [part.split("</Key>")[0] for part in body.split("<Key>")[1:]] == expected


async def test_objects_outlive_the_server_and_deleted_ones_stay_deleted(tmp_path):
    async with client(tmp_path) as s:
        await s.put("/tansu/a/kept", content=b"kept")
        await s.put("/tansu/a/gone", content=b"gone")
        deleted = await s.post(
            "/tansu", params={"delete": ""}, content=b"<Delete><Object><Key>a/gone</Key></Object></Delete>"
        )
        assert deleted.status_code == 200
    async with client(tmp_path) as restarted:
        assert (await restarted.get("/tansu/a/kept")).content == b"kept"
        assert (await restarted.get("/tansu/a/gone")).status_code == 404
        assert (await restarted.get("/tansu/a/kept", headers={"Range": "bytes=1-2"})).content == b"ep"

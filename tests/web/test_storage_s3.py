"""The object store: the same behaviour from the local data folder and from a real S3-compatible
server (s3rver on loopback, which checks the access key), and the platform running on S3."""

from __future__ import annotations

import pytest

import s3_kit
from web_kit import analyse_all, make_platform, upload


@pytest.fixture(scope="module")
def s3():
    why = s3_kit.available()
    if why:
        pytest.skip(why)
    server = s3_kit.S3Server()
    yield server
    server.stop()


@pytest.fixture
def s3_env(s3, monkeypatch):
    for k, v in s3.env().items():
        monkeypatch.setenv(k, v)
    return s3


def _s3_store(s3, tmp_path, prefix):
    from pulmo.web.storage import S3Storage

    store = S3Storage(s3.bucket, prefix, cache_dir=tmp_path / "cache", endpoint_url=s3.url)
    store.check()
    return store


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    from pulmo.web.storage import LocalStorage

    if request.param == "local":
        return LocalStorage(tmp_path / "files")
    request.getfixturevalue("s3_env")
    return _s3_store(request.getfixturevalue("s3"), tmp_path, f"t-{tmp_path.name}")


def test_store_contract(store, tmp_path):
    assert not store.exists("a/b.bin")
    assert not store.local_path("a/b.bin").exists()
    store.put_bytes("a/b.bin", b"first")
    assert store.exists("a/b.bin") and store.read_bytes("a/b.bin") == b"first"
    assert store.local_path("a/b.bin").read_bytes() == b"first"
    store.put_bytes("a/b.bin", b"second, longer")           # replaced: a reader's file follows
    assert store.local_path("a/b.bin").read_bytes() == b"second, longer"
    folder = tmp_path / "tree"
    (folder / "sub").mkdir(parents=True)
    (folder / "x.txt").write_text("x")
    (folder / "sub" / "y.txt").write_text("y")
    assert store.put_tree("t", folder) == ["t/sub/y.txt", "t/x.txt"]
    assert store.read_bytes("t/sub/y.txt") == b"y"
    src = tmp_path / "src.bin"
    src.write_bytes(bytes(range(256)) * 1000)
    store.put_file("f/src.bin", src)
    assert store.read_bytes("f/src.bin") == src.read_bytes()
    store.delete_prefix("t")
    assert not store.exists("t/x.txt") and not store.exists("t/sub/y.txt") and store.exists("a/b.bin")
    with pytest.raises(FileNotFoundError):
        store.read_bytes("t/x.txt")
    for bad in ("../escape", "/abs", "a/../../b"):
        with pytest.raises(ValueError):
            store.put_bytes(bad, b"")


def test_wrong_credentials_and_no_server_are_clear_errors(s3, tmp_path, monkeypatch):
    from pulmo.web.storage import S3Storage, StorageError

    # s3rver 3.7 checks the access key id (it accepted a wrong secret with a V4 signature, measured)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "not-a-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "S3RVER")
    store = S3Storage(s3.bucket, "", cache_dir=tmp_path / "c", endpoint_url=s3.url)
    with pytest.raises(StorageError, match="refused"):
        store.put_bytes("x", b"1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "S3RVER")
    nowhere = S3Storage(s3.bucket, "", cache_dir=tmp_path / "c", endpoint_url="http://127.0.0.1:9")
    with pytest.raises(StorageError, match="could not"):
        nowhere.check()


def test_serve_refuses_an_unreachable_store(tmp_path):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "pulmo", "serve", "--data-dir", str(tmp_path / "d"), "--storage-url",
                        "s3://pulmo", "--port", "9"], capture_output=True, text=True, timeout=120,
                       env={**__import__("os").environ, "PULMO_S3_ENDPOINT_URL": "http://127.0.0.1:9",
                            "AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b"})
    assert r.returncode != 0
    assert "object store" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.slow
def test_platform_keeps_images_and_results_in_s3(s3_env, tmp_path, demo_zip):
    import boto3

    p = make_platform(tmp_path / "data", storage_url=f"s3://{s3_env.bucket}/plat", s3_endpoint_url=s3_env.url)
    try:
        r = upload(p, demo_zip)
        assert r.status_code == 201, r.text
        sid = r.json()["id"]
        analyse_all(p)
        got = p.client.get(f"/api/studies/{sid}", headers=p.headers("rad")).json()
        assert got["status"] == "done", got
        assert got["results"]["quantification"]["lungs"]["total"]["volume_ml"] > 0
        sl = p.client.get(f"/api/studies/{sid}/viewer/hu/axial/10", headers=p.headers("rad"))
        assert sl.status_code == 200 and sl.content
        seg = p.client.get(f"/api/studies/{sid}/files/seg.dcm", headers=p.headers("rad"))
        assert seg.status_code == 200 and seg.content[128:132] == b"DICM"
        client = boto3.client("s3", endpoint_url=s3_env.url, region_name="us-east-1")
        keys = [o["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=s3_env.bucket,
                                                                                     Prefix="plat/")
                for o in page.get("Contents", [])]
        assert any(k.endswith(".dcm") and "/dicom/" in k for k in keys)
        assert any(k.endswith("/results/seg.dcm") for k in keys)
        assert any(k.endswith("/viewer/hu.npy") for k in keys)
        files = tmp_path / "data" / "files"
        assert not files.exists() or not any(f.is_file() for f in files.rglob("*"))
    finally:
        p.client.close()
        p.app.state.engine.dispose()

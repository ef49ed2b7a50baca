"""Files of the platform (DICOM instances, analysis results, viewer volumes), addressed by keys
such as ``orgs/3/studies/12/dicom/1.2.3.dcm``.

Two stores with the same methods: :class:`LocalStorage` (the default: files under the data
folder) and :class:`S3Storage` (an S3-compatible object store shared by every API and worker
process of a deployment past one machine; each process keeps a disposable local cache of the
objects it reads as files). :func:`make_storage` picks one from the settings."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path, PurePosixPath

from pulmo.errors import PulmoError


def _check_key(key: str) -> PurePosixPath:
    p = PurePosixPath(key)
    if p.is_absolute() or ".." in p.parts or not p.parts:
        raise ValueError(f"invalid storage key {key!r}")
    return p


class LocalStorage:
    """Keys are relative paths under ``root``. Writes land in a temporary file renamed into place
    (a reader never sees half a file)."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        return self.root.joinpath(*_check_key(key).parts)

    def put_bytes(self, key: str, data: bytes) -> None:
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".up-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def put_file(self, key: str, src: Path) -> None:
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".up-")
        os.close(fd)
        try:
            shutil.copyfile(src, tmp)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def put_tree(self, prefix: str, folder: Path) -> list[str]:
        """Copy every file of ``folder`` under ``prefix``; returns the keys."""
        keys = []
        for p in sorted(Path(folder).rglob("*")):
            if p.is_file():
                key = f"{prefix}/{p.relative_to(folder).as_posix()}"
                self.put_file(key, p)
                keys.append(key)
        return keys

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def read_bytes(self, key: str) -> bytes:
        return self.path(key).read_bytes()

    def local_path(self, key: str) -> Path:
        """A path on this machine holding the object (here: the file itself)."""
        return self.path(key)

    def delete_prefix(self, prefix: str) -> None:
        shutil.rmtree(self.path(prefix), ignore_errors=True)


class StorageError(PulmoError):
    """The object store cannot be reached or refuses the request (the message says which)."""


class S3Storage:
    """Keys are object names under ``prefix`` in ``bucket`` of an S3-compatible store (boto3;
    ``endpoint_url`` for a store other than AWS, credentials from boto3's usual sources:
    ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` or a profile).

    An object is written whole by one PUT (a reader never sees half of it). :meth:`local_path`
    downloads an object into ``cache_dir`` (``.../<key>``) and serves it from there while its
    ETag is unchanged, so readers that need a file (the analysis, memory-mapped viewer volumes)
    work the same as with local storage; the cache can be deleted at any time.
    """

    def __init__(self, bucket: str, prefix: str = "", cache_dir: Path | None = None, endpoint_url: str | None = None,
                 region: str | None = None, client=None):
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.cache_dir = Path(cache_dir or tempfile.mkdtemp(prefix="pulmo-s3-cache-"))
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.client = client or boto3.session.Session().client(   # own session: credentials read now
            "s3", endpoint_url=endpoint_url, region_name=region or "us-east-1",
            config=Config(retries={"max_attempts": 4, "mode": "standard"}, connect_timeout=5, read_timeout=60,
                          s3={"addressing_style": "path"}))

    # -- names
    def _name(self, key: str) -> str:
        k = _check_key(key).as_posix()
        return f"{self.prefix}/{k}" if self.prefix else k

    def _call(self, what: str, fn, *args, **kw):
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(*args, **kw)
        except ClientError as exc:
            err = exc.response.get("Error", {})
            code = err.get("Code", "")
            if code in ("NoSuchKey", "404", "NotFound"):
                raise FileNotFoundError(what) from None
            raise StorageError(f"the object store refused to {what}: {code} {err.get('Message', '')}".strip()) from None
        except BotoCoreError as exc:
            raise StorageError(f"the object store could not {what}: {exc}") from None

    def check(self) -> None:
        """Raise :class:`StorageError` unless the bucket can be reached with these credentials."""
        self._call(f"open bucket {self.bucket!r}", self.client.head_bucket, Bucket=self.bucket)

    # -- the store's methods (as LocalStorage)
    def put_bytes(self, key: str, data: bytes) -> None:
        self._call(f"store {key}", self.client.put_object, Bucket=self.bucket, Key=self._name(key), Body=data)

    def put_file(self, key: str, src: Path) -> None:
        with open(src, "rb") as fh:
            self._call(f"store {key}", self.client.put_object, Bucket=self.bucket, Key=self._name(key), Body=fh)

    def put_tree(self, prefix: str, folder: Path) -> list[str]:
        keys = []
        for p in sorted(Path(folder).rglob("*")):
            if p.is_file():
                key = f"{prefix}/{p.relative_to(folder).as_posix()}"
                self.put_file(key, p)
                keys.append(key)
        return keys

    def exists(self, key: str) -> bool:
        try:
            self._call(f"look up {key}", self.client.head_object, Bucket=self.bucket, Key=self._name(key))
            return True
        except FileNotFoundError:
            return False

    def read_bytes(self, key: str) -> bytes:
        out = self._call(f"read {key}", self.client.get_object, Bucket=self.bucket, Key=self._name(key))
        return out["Body"].read()

    def local_path(self, key: str) -> Path:
        """The object as a file in the local cache (downloaded when missing or changed). A missing
        object gives a path that does not exist, as with local storage."""
        target = self.cache_dir.joinpath(*_check_key(key).parts)
        tag_file = target.with_name(target.name + ".etag")
        try:
            head = self._call(f"look up {key}", self.client.head_object, Bucket=self.bucket, Key=self._name(key))
        except FileNotFoundError:
            target.unlink(missing_ok=True)
            tag_file.unlink(missing_ok=True)
            return target
        etag = head.get("ETag", "")
        if target.is_file() and tag_file.is_file() and tag_file.read_text() == etag:
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".down-")
        os.close(fd)
        try:
            self._call(f"read {key}", self.client.download_file, self.bucket, self._name(key), tmp)
            os.replace(tmp, target)
            tag_file.write_text(etag)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return target

    def delete_prefix(self, prefix: str) -> None:
        name = self._name(prefix).rstrip("/") + "/"
        paginator = self.client.get_paginator("list_objects_v2")
        pages = self._call(f"list {prefix}", lambda: list(paginator.paginate(Bucket=self.bucket, Prefix=name)))
        for page in pages:
            objects = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if objects:
                self._call(f"delete {prefix}", self.client.delete_objects, Bucket=self.bucket,
                           Delete={"Objects": objects, "Quiet": True})
        shutil.rmtree(self.cache_dir.joinpath(*_check_key(prefix).parts), ignore_errors=True)


def make_storage(settings) -> LocalStorage | S3Storage:
    """The store the settings name: ``storage_url`` ``s3://bucket[/prefix]`` (endpoint from
    ``s3_endpoint_url``), else files under ``settings.files_dir``."""
    url = getattr(settings, "storage_url", None)
    if not url:
        return LocalStorage(settings.files_dir)
    if not url.startswith("s3://") or not url[5:].strip("/"):
        raise StorageError(f"unknown storage URL {url!r}: use s3://BUCKET[/PREFIX], or none for the data folder")
    bucket, _, prefix = url[5:].partition("/")
    store = S3Storage(bucket, prefix, cache_dir=settings.data_dir / "cache" / "objects",
                      endpoint_url=getattr(settings, "s3_endpoint_url", None))
    store.check()
    return store

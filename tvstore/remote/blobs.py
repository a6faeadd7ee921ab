"""Blob bytes to and from a served registry: ask first, send only what is missing.

With an S3 backend the server answers with presigned URLs and the bytes go
straight between this client and the bucket; with a local backend they are
streamed through the server. Either way every read is verified here too.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

from tvstore.blobs.base import BlobStore, check_digest, digest_bytes
from tvstore.errors import UsageError
from tvstore.remote.client import BUCKET_RETRY_STATUS, Client, checked


class RemoteBlobStore(BlobStore):
    """The blob store behind ``tvstore serve``; counts what it uploaded (a re-push should send nothing)."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.url = client.url
        self.uploads = 0
        self.uploaded_bytes = 0
        self._present: set[str] = set()
        self._lock = threading.Lock()

    def put(self, data: bytes) -> str:
        digest = digest_bytes(data)
        if digest in self._present:
            return digest
        answer = self.client.json("POST", "/api/blobs/missing", json={"digests": [digest]}, retry=True)
        if digest in answer["missing"]:
            self._upload(digest, data, answer["upload"].get(digest))
        self._present.add(digest)
        return digest

    def _upload(self, digest: str, data: bytes, presigned: str | None) -> None:
        if presigned:
            checked(self.client.send(self.client.plain, "PUT", presigned, True, BUCKET_RETRY_STATUS, content=data))
        else:
            self.client.call("PUT", f"/api/blobs/{digest}", content=data)
        with self._lock:
            self.uploads += 1
            self.uploaded_bytes += len(data)

    def _read(self, digest: str) -> bytes:
        check_digest(digest)
        response = self.client.send(self.client.http, "GET", f"/api/blobs/{digest}", True, follow_redirects=False)
        if response.status_code == 307:  # a presigned URL: fetch from the bucket without our token
            response = self.client.send(self.client.plain, "GET", response.headers["location"], True, BUCKET_RETRY_STATUS)
        return checked(response).content

    def exists(self, digest: str) -> bool:
        answer = self.client.json("POST", "/api/blobs/missing", json={"digests": [check_digest(digest)]}, retry=True)
        return digest not in answer["missing"]

    def size(self, digest: str) -> int:
        return len(self._read(digest))

    def delete(self, digest: str) -> None:
        raise UsageError("blobs of a served registry are removed by `tvstore gc` on the server, not by clients")

    def iter_digests(self) -> Iterator[str]:
        raise UsageError("a served registry does not list its blobs to clients")

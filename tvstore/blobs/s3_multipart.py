"""Multipart upload of one large blob, all or nothing.

boto3's transfer manager would do the parts, but it cannot send
``If-None-Match`` on the completing request, and put-if-absent must hold for
large blobs too. So this is the plain protocol: create, upload parts in
parallel, complete — and abort on any failure, so a failed upload leaves
neither an object nor billed orphan parts behind.
"""

from __future__ import annotations

import logging
from concurrent.futures import Executor, Future, wait
from typing import Any

from tvstore.blobs.s3_errors import error_code, http_status

log = logging.getLogger(__name__)


def part_ranges(size: int, part_size: int) -> list[tuple[int, int]]:
    """``(start, end)`` byte ranges of consecutive parts covering ``size`` bytes."""
    return [(start, min(start + part_size, size)) for start in range(0, size, part_size)]


def upload_multipart(
    client: Any,
    bucket: str,
    key: str,
    data: bytes | memoryview,
    *,
    part_size: int,
    executor: Executor,
    if_none_match: bool,
) -> bool:
    """Upload ``data`` to ``key`` in parts; ``False`` if the object already existed.

    With ``if_none_match`` the completing request is conditional, so two
    writers racing on one key never replace each other's object.
    """
    upload_id = client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    futures: list[Future[dict]] = []
    try:
        view = memoryview(data)
        for number, (start, end) in enumerate(part_ranges(len(view), part_size), start=1):
            futures.append(executor.submit(_upload_part, client, bucket, key, upload_id, number, view[start:end]))
        parts = [future.result() for future in futures]
        extra = {"IfNoneMatch": "*"} if if_none_match else {}
        client.complete_multipart_upload(
            Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}, **extra
        )
        return True
    except BaseException as exc:
        # parts still in flight could land after an abort; let them finish first
        for future in futures:
            future.cancel()
        wait(futures)
        _abort(client, bucket, key, upload_id)
        if error_code(exc) == "PreconditionFailed":
            return False
        if error_code(exc) == "NoSuchUpload" and _exists(client, bucket, key):
            return True  # a retried complete whose first attempt succeeded, reply lost
        raise


def _upload_part(client: Any, bucket: str, key: str, upload_id: str, number: int, chunk: memoryview) -> dict:
    response = client.upload_part(
        Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=bytes(chunk)
    )
    return {"PartNumber": number, "ETag": response["ETag"]}


def _exists(client: Any, bucket: str, key: str) -> bool:
    try:
        client.head_object(Bucket=bucket, Key=key)
        return True
    except Exception as exc:
        if http_status(exc) == 404:
            return False
        raise


def _abort(client: Any, bucket: str, key: str, upload_id: str) -> None:
    """Abort, best effort: if the endpoint is down too, a bucket lifecycle rule
    (AbortIncompleteMultipartUpload) is the backstop; the object never appears."""
    try:
        client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
    except Exception as exc:  # noqa: BLE001 - the original failure matters more
        log.warning("could not abort multipart upload %s of %s/%s: %s", upload_id, bucket, key, exc)

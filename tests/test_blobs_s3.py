"""The S3 blob store and the local cache, against a real S3 HTTP endpoint (moto's server).

Faults are injected by a proxy between the store and the server. Nothing here
is ever skipped: if moto cannot start, the fixtures fail the tests.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import boto3
import pytest

from blob_contract import BlobStoreContract
from fault_proxy import FaultProxy
from s3_server import free_port, s3_bucket, s3_env, s3_server  # noqa: F401 - fixtures
from tvstore.blobs import BlobStore, digest_bytes, open_blob_store
from tvstore.blobs.cache import CachedBlobStore, without_cache
from tvstore.blobs.s3 import S3BlobStore
from tvstore.blobs.s3_config import S3Settings
from tvstore.blobs.s3_errors import S3UnavailableError
from tvstore.errors import NotFoundError, TvstoreError

KiB = 1024
#: small enough for a modest test blob to need several parts
SMALL_PARTS = S3Settings(multipart_threshold=64 * KiB, part_size=32 * KiB, max_concurrency=4, list_page_size=7)


def raw_client(endpoint: str):  # noqa: ANN201 - boto3 client
    return boto3.client("s3", endpoint_url=endpoint)


def overwrite_object(store: S3BlobStore, digest: str, data: bytes) -> None:
    """Replace a blob's bytes in the bucket behind the store's back."""
    raw_client(store.endpoint).put_object(Bucket=store.bucket, Key=store.key(digest), Body=data)


def _cache_bytes(cache: CachedBlobStore) -> int:
    """Bytes of the blobs in the cache folder (temporary files excluded), read from the disk itself."""
    return sum(p.stat().st_size for p in cache.objects.glob("*/*") if not p.name.startswith("."))


def blob(i: int, size: int = 4 * KiB) -> bytes:
    return (f"blob {i} ".encode() * (size // 6 + 1))[:size]


# -- the shared contract --------------------------------------------------------


class TestS3BlobStore(BlobStoreContract):
    @pytest.fixture
    def store(self, s3_bucket: str) -> S3BlobStore:
        store = S3BlobStore(s3_bucket, "team/registry", settings=SMALL_PARTS)
        yield store
        store.close()

    @pytest.fixture
    def other(self, s3_bucket: str) -> S3BlobStore:
        store = S3BlobStore(s3_bucket, "team/other", settings=SMALL_PARTS)
        yield store
        store.close()

    def corrupt(self, store: BlobStore, digest: str, data: bytes) -> None:
        assert isinstance(store, S3BlobStore)
        overwrite_object(store, digest, data)

    def test_layout_is_prefix_objects_ab_cdef(self, store: S3BlobStore) -> None:
        digest = store.put(b"layout")
        key = f"team/registry/objects/{digest[:2]}/{digest[2:]}"
        body = raw_client(store.endpoint).get_object(Bucket=store.bucket, Key=key)["Body"].read()
        assert body == b"layout"

    def test_url_reopens_without_naming_the_endpoint(self, store: S3BlobStore) -> None:
        assert store.url == f"s3://{store.bucket}/team/registry"

    def test_explicit_endpoint_travels_in_the_url(self, store: S3BlobStore, monkeypatch: pytest.MonkeyPatch) -> None:
        endpoint = store.endpoint
        digest = store.put(b"explicit endpoint")
        monkeypatch.delenv("AWS_ENDPOINT_URL")
        explicit = S3BlobStore.from_url(f"s3://{store.bucket}/team/registry", endpoint_url=endpoint)
        assert "endpoint_url=" in explicit.url
        assert open_blob_store(explicit.url, cache=False).get(digest) == b"explicit endpoint"

    def test_listing_paginates_and_ignores_strays(self, store: S3BlobStore) -> None:
        digests = {store.put(blob(i, 100)) for i in range(23)}  # page size 7: four pages
        client = raw_client(store.endpoint)
        client.put_object(Bucket=store.bucket, Key="team/registry/objects/zz/not-a-blob", Body=b"x")
        client.put_object(Bucket=store.bucket, Key="elsewhere/objects/ab/" + "c" * 62, Body=b"x")
        assert sorted(store.iter_digests()) == sorted(digests)

    def test_put_many_and_get_many_in_parallel(self, store: S3BlobStore) -> None:
        datas = [blob(i) for i in range(20)] + [blob(0)]
        digests = store.put_many(datas)
        assert digests == [digest_bytes(d) for d in datas]
        got = store.get_many(reversed(digests))
        assert got == {digest_bytes(d): d for d in datas}

    def test_get_many_reports_a_missing_blob(self, store: S3BlobStore) -> None:
        present = store.put(b"here")
        with pytest.raises(NotFoundError, match="is missing"):
            store.get_many([present, digest_bytes(b"not here")])

    def test_re_put_is_settled_by_a_conditional_put(self, store: S3BlobStore) -> None:
        """(The refreshed age itself is part of the shared contract.)"""
        digest = store.put(b"once")
        assert store.put(b"once") == digest
        assert store._conditional is True  # moto speaks If-None-Match: no HEAD before each put

    def test_re_put_of_a_multipart_blob_refreshes_it_too(self, store: S3BlobStore) -> None:
        data = os.urandom(100 * KiB)
        digest = store.put(data)
        first = store.modified(digest)
        time.sleep(1.1)
        store.put(data)
        assert store.modified(digest) > first
        assert store.get(digest) == data


class TestCachedS3BlobStore(BlobStoreContract):
    @pytest.fixture
    def store(self, s3_bucket: str, tmp_path: Path) -> CachedBlobStore:
        return CachedBlobStore(S3BlobStore(s3_bucket, "cached", settings=SMALL_PARTS), tmp_path / "cache", 1 << 20)

    @pytest.fixture
    def other(self, s3_bucket: str, tmp_path: Path) -> CachedBlobStore:
        return CachedBlobStore(S3BlobStore(s3_bucket, "cached-other", settings=SMALL_PARTS), tmp_path / "cache2", 1 << 20)

    def corrupt(self, store: BlobStore, digest: str, data: bytes) -> None:
        assert isinstance(store, CachedBlobStore) and isinstance(store.remote, S3BlobStore)
        overwrite_object(store.remote, digest, data)


# -- multipart ------------------------------------------------------------------


def multipart_store(bucket: str, **overrides: object) -> S3BlobStore:
    settings = S3Settings(**{**SMALL_PARTS.__dict__, **overrides})
    return S3BlobStore(bucket, "mp", settings=settings)


def test_multipart_round_trip_above_the_threshold(s3_bucket: str) -> None:
    store = multipart_store(s3_bucket)
    data = os.urandom(300 * KiB + 17)  # ten 32 KiB parts, the last one short
    digest = store.put(data)
    head = raw_client(store.endpoint).head_object(Bucket=s3_bucket, Key=store.key(digest))
    assert head["ETag"].strip('"').endswith("-10")  # S3's multipart ETag: md5-of-md5s "-" part count
    assert store.get(digest) == data
    assert store.put(data) == digest  # already there: skipped after a HEAD
    assert not raw_client(store.endpoint).list_multipart_uploads(Bucket=s3_bucket).get("Uploads")


def test_failed_multipart_upload_leaves_no_object_and_no_parts(s3_env: str, s3_bucket: str) -> None:
    with FaultProxy(s3_env) as proxy:
        store = S3BlobStore(s3_bucket, "mp", endpoint_url=proxy.endpoint,
                            settings=S3Settings(**{**SMALL_PARTS.__dict__, "max_attempts": 2}))
        proxy.fail_fraction(1.0, "500", match=lambda r: "partNumber=3" in r.query)
        data = os.urandom(200 * KiB)
        with pytest.raises(S3UnavailableError, match=f"bucket '{s3_bucket}' at {proxy.endpoint}"):
            store.put(data)
        client = raw_client(s3_env)
        assert not client.list_objects_v2(Bucket=s3_bucket).get("Contents")
        assert not client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads")
        proxy.clear()
        assert store.get(store.put(data)) == data  # and a retried put succeeds


def test_large_blobs_are_read_in_parallel_ranges_that_survive_faults(s3_env: str, s3_bucket: str) -> None:
    with FaultProxy(s3_env) as proxy:
        store = S3BlobStore(s3_bucket, "mp", endpoint_url=proxy.endpoint, settings=SMALL_PARTS)
        data = os.urandom(160 * KiB + 5)
        digest = store.put(data)
        proxy.fail_next(1, "truncate", match=lambda r: r.headers.get("range", "").startswith("bytes=65536-"))
        proxy.fail_next(1, "drop", match=lambda r: r.headers.get("range", "").startswith("bytes=98304-"))
        before = len(proxy.seen)
        assert store.get(digest) == data
        ranges = {s.request.headers.get("range") for s in proxy.seen[before:] if s.request.method == "GET"}
        assert len(ranges) == 6  # 32 KiB ranges, the first of which told the size
        assert proxy.faults("truncate") == 1 and proxy.faults("drop") == 1


@pytest.mark.parametrize("request_kind", ["complete", "small put"])
def test_lost_replies_are_retried_without_harm(s3_env: str, s3_bucket: str, request_kind: str) -> None:
    """The server acted but the reply never came: botocore retries, and the retry must not fail."""
    complete = lambda r: r.method == "POST" and "uploadId=" in r.query  # noqa: E731
    small_put = lambda r: r.method == "PUT" and "if-none-match" in r.headers  # noqa: E731
    with FaultProxy(s3_env) as proxy:
        store = S3BlobStore(s3_bucket, "lost", endpoint_url=proxy.endpoint, settings=SMALL_PARTS)
        store.put(b"learn that the server speaks If-None-Match")
        data = os.urandom(100 * KiB) if request_kind == "complete" else b"small"
        proxy.fail_next(1, "lose-reply", match=complete if request_kind == "complete" else small_put)
        if request_kind == "complete":  # AWS forgets a completed upload: the retry hears NoSuchUpload
            proxy.fail_next(1, "404-upload", match=complete)
        digest = store.put(data)
        assert proxy.faults("lose-reply") == 1
        assert proxy.faults("404-upload") == (1 if request_kind == "complete" else 0)
        assert store.get(digest) == data
        assert not raw_client(s3_env).list_multipart_uploads(Bucket=s3_bucket).get("Uploads")


# -- conditional put ------------------------------------------------------------


def test_conditional_put_falls_back_to_head_checks_once(s3_env: str, s3_bucket: str) -> None:
    """A server that rejects If-None-Match with 501 is detected on the first put and never asked again."""
    conditional = lambda r: "if-none-match" in r.headers  # noqa: E731
    with FaultProxy(s3_env) as proxy:
        proxy.fail_fraction(1.0, "501", match=conditional)
        store = S3BlobStore(s3_bucket, "", endpoint_url=proxy.endpoint)
        digests = [store.put(blob(i)) for i in range(5)]
        digests.append(store.put(blob(0)))  # an existing blob: HEAD says so, no upload
        assert store._conditional is False
        assert proxy.faults("501") == 1
        assert sum(1 for s in proxy.seen if conditional(s.request)) == 1
        puts = [s.request for s in proxy.seen if s.request.method == "PUT" and not s.fault]
        assert len([r for r in puts if "x-amz-copy-source" not in r.headers]) == 5
        assert store.get_many(digests) == {digest_bytes(blob(i)): blob(i) for i in range(5)}


def test_conditional_put_of_an_existing_blob_refreshes_it_server_side(s3_env: str, s3_bucket: str) -> None:
    with FaultProxy(s3_env) as proxy:
        store = S3BlobStore(s3_bucket, "", endpoint_url=proxy.endpoint)
        store.put(b"first")
        before = len(proxy.seen)
        store.put(b"first")
        requests = [s.request for s in proxy.seen[before:]]
        assert [r.method for r in requests] == ["PUT", "PUT"]  # 412, then a self-copy: no HEAD
        assert "x-amz-copy-source" in requests[1].headers


# -- retries and faults ---------------------------------------------------------


def faulty_store(bucket: str, proxy: FaultProxy, attempts: int = 6) -> S3BlobStore:
    settings = S3Settings(max_attempts=attempts, connect_timeout=2, read_timeout=5, list_page_size=5)
    return S3BlobStore(bucket, "faults", endpoint_url=proxy.endpoint, settings=settings)


@pytest.mark.parametrize("action", ["500", "503", "drop"])
def test_transient_faults_are_retried(s3_env: str, s3_bucket: str, action: str) -> None:
    with FaultProxy(s3_env) as proxy:
        store = faulty_store(s3_bucket, proxy)
        proxy.fail_next(2, action)
        digest = store.put(b"survives " + action.encode())
        proxy.fail_next(2, action)
        assert store.get(digest) == b"survives " + action.encode()
        assert proxy.faults(action) == 4


def test_adaptive_retry_mode_rides_out_throttling(s3_env: str, s3_bucket: str) -> None:
    with FaultProxy(s3_env) as proxy:
        settings = S3Settings(retry_mode="adaptive", max_attempts=5, connect_timeout=2, read_timeout=5)
        store = S3BlobStore(s3_bucket, "adaptive", endpoint_url=proxy.endpoint, settings=settings)
        proxy.fail_next(3, "503")
        assert store.get(store.put(b"adaptive")) == b"adaptive"
        assert proxy.faults("503") == 3


def test_bucket_check_tolerates_a_policy_without_list_bucket(s3_env: str, s3_bucket: str) -> None:
    """HeadBucket needs s3:ListBucket; object-only policies answer it 403 and must still work."""
    with FaultProxy(s3_env) as proxy:
        store = faulty_store(s3_bucket, proxy)
        proxy.fail_next(1, "403", match=lambda r: r.method == "HEAD" and r.path.rstrip("/") == f"/{s3_bucket}")
        assert store.get(store.put(b"object-only policy")) == b"object-only policy"
        assert proxy.faults("403") == 1


def test_access_denied_on_objects_is_a_clear_error(s3_env: str, s3_bucket: str) -> None:
    with FaultProxy(s3_env) as proxy:
        store = faulty_store(s3_bucket, proxy)
        store.exists(digest_bytes(b"warm up"))
        proxy.down("403")
        with pytest.raises(TvstoreError, match=f"access denied to bucket '{s3_bucket}' at {proxy.endpoint}"):
            store.put(b"denied")


def test_truncated_response_bodies_are_re_read(s3_env: str, s3_bucket: str) -> None:
    with FaultProxy(s3_env) as proxy:
        store = faulty_store(s3_bucket, proxy)
        data = os.urandom(64 * KiB)
        digest = store.put(data)
        proxy.fail_next(2, "truncate", match=lambda r: r.method == "GET")
        assert store.get(digest) == data
        assert proxy.faults("truncate") == 2


def test_a_fraction_of_failing_requests_does_not_lose_anything(s3_env: str, s3_bucket: str) -> None:
    with FaultProxy(s3_env, seed=7) as proxy:
        store = faulty_store(s3_bucket, proxy, attempts=10)
        proxy.fail_fraction(0.2, "503")
        proxy.fail_fraction(0.1, "drop")
        datas = [blob(i) for i in range(30)]
        digests = store.put_many(datas)
        assert store.get_many(digests) == dict(zip(digests, datas))
        assert set(store.iter_digests()) == set(digests)
        assert proxy.faults() > 5
    assert set(S3BlobStore(s3_bucket, "faults").iter_digests()) == set(digests)


def test_persistently_down_endpoint_fails_put_cleanly_and_quickly(s3_env: str, s3_bucket: str) -> None:
    with FaultProxy(s3_env) as proxy:
        store = faulty_store(s3_bucket, proxy, attempts=3)
        store.put(b"before the outage")  # bucket checked, connection pooled
        proxy.down()
        started = time.monotonic()
        with pytest.raises(S3UnavailableError) as caught:
            store.put(b"during the outage")
        elapsed = time.monotonic() - started
        message = str(caught.value)
        assert s3_bucket in message and proxy.endpoint in message
        assert "\n" not in message and "Traceback" not in message
        assert elapsed < 15, f"gave up after {elapsed:.1f}s"
        assert proxy.faults("drop") == 3  # max_attempts requests, then a clean error
        proxy.clear()
    assert not S3BlobStore(s3_bucket, "faults").exists(digest_bytes(b"during the outage"))


def test_endpoint_with_nothing_listening(s3_env: str) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"
    store = S3BlobStore("any-bucket", settings=S3Settings(max_attempts=2, connect_timeout=1), endpoint_url=endpoint)
    with pytest.raises(S3UnavailableError, match=f"bucket 'any-bucket' at {endpoint}.*unreachable"):
        store.put(b"nowhere to go")


def test_persistent_throttling_names_the_code(s3_env: str, s3_bucket: str) -> None:
    with FaultProxy(s3_env) as proxy:
        store = faulty_store(s3_bucket, proxy, attempts=2)
        store.exists(digest_bytes(b"warm up"))
        proxy.down("503")
        with pytest.raises(S3UnavailableError, match="503 SlowDown.*after 2 attempts"):
            store.put(b"throttled")


def test_missing_bucket_names_bucket_and_endpoint(s3_env: str) -> None:
    store = open_blob_store("s3://no-such-bucket/prefix", cache=False)
    actions = [lambda: store.put(b"x"), lambda: store.exists(digest_bytes(b"x")), lambda: list(store.iter_digests())]
    for action in actions:
        with pytest.raises(NotFoundError, match=f"S3 bucket 'no-such-bucket' does not exist at {s3_env}"):
            action()


def test_errors_are_tvstore_errors_without_botocore_tracebacks(s3_env: str) -> None:
    store = S3BlobStore("no-such-bucket", settings=S3Settings(max_attempts=1))
    with pytest.raises(TvstoreError) as caught:
        store.get(digest_bytes(b"x"))
    assert "botocore" not in type(caught.value).__module__


# -- open_blob_store and the cache -------------------------------------------


def test_open_blob_store_wraps_s3_in_the_configured_cache(s3_bucket: str, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TVSTORE_CACHE_DIR", str(tmp_path / "c"))
    monkeypatch.setenv("TVSTORE_CACHE_MAX_BYTES", "2M")
    store = open_blob_store(f"s3://{s3_bucket}/p")
    assert isinstance(store, CachedBlobStore)
    assert store.root == tmp_path / "c" and store.max_bytes == 2 * 1024 * 1024
    assert store.url == f"s3://{s3_bucket}/p"
    monkeypatch.setenv("TVSTORE_CACHE_DIR", "off")
    assert isinstance(open_blob_store(f"s3://{s3_bucket}/p"), S3BlobStore)


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TVSTORE_S3_MULTIPART_THRESHOLD", "8M")
    monkeypatch.setenv("TVSTORE_S3_PART_SIZE", "5MiB")
    monkeypatch.setenv("TVSTORE_S3_MAX_CONCURRENCY", "3")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "4")
    monkeypatch.setenv("AWS_RETRY_MODE", "adaptive")
    settings = S3Settings.from_env(max_concurrency=5)
    assert (settings.multipart_threshold, settings.part_size) == (8 << 20, 5 << 20)
    assert (settings.max_concurrency, settings.max_attempts, settings.retry_mode) == (5, 4, "adaptive")
    assert settings.part_size_for(100 << 30) == -(-(100 << 30) // 10_000)  # within S3's 10,000 parts
    monkeypatch.setenv("AWS_RETRY_MODE", "sometimes")
    with pytest.raises(TvstoreError, match="retry mode"):
        S3Settings.from_env()


def test_without_cache_reaches_the_bucket(s3_bucket: str, tmp_path: Path) -> None:
    """verify must see a corrupt object even when the cache holds good bytes."""
    store = CachedBlobStore(S3BlobStore(s3_bucket), tmp_path / "c")
    digest = store.put(b"good bytes")
    store.get(digest)
    overwrite_object(store.remote, digest, b"bad bytes!")
    assert store.get(digest) == b"good bytes"
    with pytest.raises(TvstoreError, match="is corrupt"):
        without_cache(store).get(digest)
    assert without_cache(store.remote) is store.remote


def test_s3_endpoint_argument_overrides_the_environment(s3_env: str, s3_bucket: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    store = open_blob_store(f"s3://{s3_bucket}", s3_endpoint=s3_env, cache=False)
    assert store.get(store.put(b"via --s3-endpoint")) == b"via --s3-endpoint"


@pytest.fixture
def cached(s3_env: str, s3_bucket: str, tmp_path: Path) -> CachedBlobStore:
    with FaultProxy(s3_env) as proxy:
        remote = S3BlobStore(s3_bucket, "c", endpoint_url=proxy.endpoint)
        store = CachedBlobStore(remote, tmp_path / "cache", max_bytes=64 * KiB)
        store.proxy = proxy  # type: ignore[attr-defined]
        yield store


def gets(store: CachedBlobStore) -> int:
    return sum(1 for s in store.proxy.seen if s.request.method == "GET")  # type: ignore[attr-defined]


def test_cache_hit_after_first_read(cached: CachedBlobStore) -> None:
    digest = cached.put(blob(1))
    assert not cached.path(digest).is_file()  # writes go to the remote only
    assert cached.get(digest) == blob(1)
    assert cached.path(digest).is_file() and gets(cached) == 1
    assert cached.get(digest) == blob(1)
    assert cached.get_many([digest]) == {digest: blob(1)}
    assert gets(cached) == 1


def test_corrupt_cache_entry_is_dropped_and_refetched(cached: CachedBlobStore) -> None:
    digest = cached.put(blob(2))
    cached.get(digest)
    path = cached.path(digest)
    path.write_bytes(b"bit rot" + path.read_bytes()[7:])
    assert cached.get(digest) == blob(2)
    assert gets(cached) == 2
    assert path.read_bytes() == blob(2)


def test_cache_size_cap_evicts_least_recently_used(cached: CachedBlobStore) -> None:
    digests = cached.put_many([blob(i, 10 * KiB) for i in range(8)])  # 80 KiB through a 64 KiB cache
    for i, digest in enumerate(digests[:5]):
        cached.get(digest)
        os.utime(cached.path(digest), (1000 + i, 1000 + i))  # make the age order unambiguous
    cached.get(digests[0])  # a hit makes it the most recently used
    for digest in digests[5:]:
        cached.get(digest)
        assert _cache_bytes(cached) <= cached.max_bytes
    assert cached.path(digests[0]).is_file() and not cached.path(digests[1]).is_file()  # the oldest went first
    assert cached.path(digests[-1]).is_file()


def test_cache_skips_blobs_larger_than_its_cap(cached: CachedBlobStore) -> None:
    digest = cached.put(os.urandom(100 * KiB))
    cached.get(digest)
    assert not cached.path(digest).is_file()


def test_delete_removes_the_cached_copy(cached: CachedBlobStore) -> None:
    digest = cached.put(blob(3))
    cached.get(digest)
    cached.delete(digest)
    assert not cached.path(digest).is_file() and not cached.exists(digest)


def test_unwritable_cache_only_costs_speed(s3_bucket: str, tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"")
    store = CachedBlobStore(S3BlobStore(s3_bucket), tmp_path / "file" / "cache")
    digest = store.put(b"no cache possible")
    assert store.get(digest) == b"no cache possible"


#: the registry-level test runs 8 pushers; the store-level one keeps the shared CI box lighter
WRITERS = 4
WRITER = textwrap.dedent("""
    import sys
    from tvstore.blobs import open_blob_store
    bucket, me = sys.argv[1], int(sys.argv[2])
    store = open_blob_store(f"s3://{bucket}/race", cache=False)
    datas = [(f"shared {i} ".encode() * 500) for i in range(12)]          # every writer puts these
    datas += [(f"own {me} {i} ".encode() * 500) for i in range(4)]         # and a few of its own
    store.put_many(datas)
    for data in datas[::3]:
        store.put(data)                                                     # and re-puts some
    print("ok")
""")


def test_concurrent_processes_putting_overlapping_blobs(s3_bucket: str) -> None:
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, s3_bucket, str(me)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for me in range(WRITERS)]
    for proc in procs:
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0 and out.strip() == "ok", err[-3000:]
    expected = [(f"shared {i} ".encode() * 500) for i in range(12)]
    expected += [(f"own {me} {i} ".encode() * 500) for me in range(WRITERS) for i in range(4)]
    store = S3BlobStore(s3_bucket, "race")
    assert sorted(store.iter_digests()) == sorted(digest_bytes(d) for d in expected)
    assert store.get_many(digest_bytes(d) for d in expected) == {digest_bytes(d): d for d in expected}


READER = textwrap.dedent("""
    import random, sys
    from tvstore.blobs.cache import CachedBlobStore, without_cache
    from tvstore.blobs.s3 import S3BlobStore
    bucket, cache_dir, seed, *digests = sys.argv[1:]
    store = CachedBlobStore(S3BlobStore(bucket, "shared"), cache_dir, max_bytes=40 * 1024)
    rng = random.Random(int(seed))
    for _ in range(150):
        digest = rng.choice(digests)
        store.get(digest)  # raises on any wrong byte
    print("ok")
""")


def test_two_processes_share_one_cache_dir(s3_bucket: str, tmp_path: Path) -> None:
    remote = S3BlobStore(s3_bucket, "shared")
    digests = remote.put_many([blob(i, 6 * KiB) for i in range(16)])  # 96 KiB over a 40 KiB cap: churn
    cache_dir = tmp_path / "shared-cache"
    procs = [
        subprocess.Popen([sys.executable, "-c", READER, s3_bucket, str(cache_dir), str(seed), *digests],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for seed in (1, 2)
    ]
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0 and out.strip() == "ok", err[-3000:]
    store = CachedBlobStore(remote, cache_dir, max_bytes=40 * KiB)
    assert 0 < _cache_bytes(store) <= 40 * KiB + 6 * KiB  # the other process may have just added one
    assert not [p for p in cache_dir.rglob(".*.tmp")]
    for digest in digests:
        if store.path(digest).is_file():
            assert digest_bytes(store.path(digest).read_bytes()) == digest

"""A push against S3 without a cache reads the base from the checkpoint ``base add`` recorded, not the bucket.

Every request goes through a recording proxy in front of the moto S3 server,
so the test counts the GETs of the base's blobs that a push makes.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import pytest
from safetensors.torch import load_file, save_file

from fault_proxy import FaultProxy
from s3_server import s3_bucket, s3_env, s3_server  # noqa: F401 - fixtures
from team_helpers import assert_rebuilds, make_checkpoints
from tvstore import Registry
from tvstore.blobs.cache import CachedBlobStore
from tvstore.db.queries import get_base, get_full_base


def _base_blobs(reg: Registry) -> set[str]:
    with reg.session() as session:
        return {t.blob_digest for t in get_full_base(session, get_base(session, "base").id).tensors}


def _blobs_got(proxy: FaultProxy) -> set[str]:
    """Digests of the blobs GET requests asked for (keys end in ``objects/ab/cdef…``)."""
    got = set()
    for seen in proxy.seen:
        parts = urlparse(seen.request.path).path.split("/")
        if seen.request.method == "GET" and len(parts) > 3 and parts[-3] == "objects":
            got.add(parts[-2] + parts[-1])
    return got


def test_push_without_a_cache_reads_the_intact_local_base_and_falls_back_when_it_changed(
    s3_bucket: str, s3_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TVSTORE_CACHE_DIR", "off")
    ckpts = make_checkpoints(tmp_path / "ckpts", count=2)
    with FaultProxy(s3_env) as proxy, Registry.open(
        database_url=f"sqlite:///{tmp_path / 'registry.db'}", blob_url=f"s3://{s3_bucket}/team", s3_endpoint=proxy.endpoint
    ) as reg:
        reg.init()
        assert not isinstance(reg.blobs, CachedBlobStore)
        reg.add_base("base", ckpts.base)
        base_blobs = _base_blobs(reg)
        assert len(base_blobs) == 10

        proxy.seen.clear()
        reg.push("intact", ckpts.finetunes["ft0"], base="base")
        assert _blobs_got(proxy) == set()  # not one byte of the base came from the bucket
        assert_rebuilds(reg, "intact@1", ckpts.tensors("ft0"), tmp_path / "intact")

        edited = load_file(ckpts.base)
        edited["w3"][0, 0] += 1.0  # the user's copy of the base drifted after `base add`
        save_file(edited, ckpts.base)
        proxy.seen.clear()
        reg.push("drifted", ckpts.finetunes["ft1"], base="base")
        assert _blobs_got(proxy) == base_blobs  # the registered base, read from the bucket
        assert_rebuilds(reg, "drifted@1", ckpts.tensors("ft1"), tmp_path / "drifted")

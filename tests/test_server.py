"""``tvstore serve`` and ``--remote``: every command through a real server, security, concurrency, a crash.

One server per backend for the module (SQLite + local folder; PostgreSQL +
moto S3, where blob bytes go through presigned URLs), started as the
installed ``tvstore serve`` with two workers; clients are the installed CLI
in subprocesses (or ``Registry.open(remote=...)``), speaking real HTTP.
"""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from s3_server import s3_server  # noqa: F401  (fixture)
from served import Served, base_env, make_tokens, pg_schema, s3_backend_env
from team_helpers import assert_bit_equal, make_checkpoints

from tvstore import Registry
from tvstore.ops.push import PendingVector
from tvstore.ops.wire import pending_to_dict

RECIPE = "method: task_arithmetic\ninputs:\n  - {ref: ft0, weight: 1.0}\n  - {ref: ft1, weight: -0.5}\n"
MAX_BODY = 1024 * 1024


@pytest.fixture(scope="module", params=["sqlite-local", "postgres-s3"])
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, pg_available: bool) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp(request.param)
    ck = make_checkpoints(tmp / "ck", count=4)
    with ExitStack() as stack:
        if request.param == "sqlite-local":
            database_url, blob_url, extra = f"sqlite:///{tmp / 'registry.db'}", str(tmp / "blobs"), {}
        else:
            if not pg_available:
                pytest.skip("PostgreSQL server not reachable at 127.0.0.1:5432")
            database_url = stack.enter_context(pg_schema())
            blob_url, extra = s3_backend_env(request.getfixturevalue("s3_server"), tmp)
        s = Served("", base_env(database_url, blob_url, extra), tmp)
        s.checkpoints = ck  # type: ignore[attr-defined]
        s.local("init")
        s.local("base", "add", "b", ck.base)
        for name in ("ft0", "ft1"):
            s.local("push", name, ck.finetunes[name], "--base", "b")
        make_tokens(s)
        s.start("--workers", "2", "--max-body", str(MAX_BODY))
        stack.callback(s.stop)
        yield s


def _blob_count(served: Served) -> int:
    blob_url = served.env["TVSTORE_BLOB_URL"]
    if blob_url.startswith("s3://"):
        import boto3

        bucket = blob_url[5:].split("/")[0]
        s3 = boto3.client("s3", endpoint_url=served.env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing", aws_session_token="testing")
        return sum(page.get("KeyCount", 0) for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket))
    return sum(1 for p in Path(blob_url).rglob("*") if p.is_file())


def _state(served: Served) -> str:
    return served.local("ls", "--all-versions", "--json").stdout


def _one_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.stderr.count("\n") == 1, proc.stderr
    return proc.stderr.strip()


# ---- every command, through the server and directly: the same answers ---------------------------------


def test_every_command_through_the_server_matches_local_use(served: Served, tmp_path: Path) -> None:
    ck = served.checkpoints  # type: ignore[attr-defined]
    pushed = json.loads(served.remote("push", "ft2", ck.finetunes["ft2"], "--base", "b", "--meta", "task=c", "--json").stdout)
    assert (pushed["ref"], pushed["meta"]) == ("ft2@1", {"task": "c"})
    served.remote("push", "ft3", ck.finetunes["ft3"], "--base", "b", "--codec", "quant:bits=4")
    added = served.remote("base", "add", "b-again", ck.base).stdout  # its blobs are all there: nothing uploaded
    assert added.startswith("added base b-again: 10 tensors, 23,040 parameters")
    for args in (["ls"], ["show", "ft2", "--tensors", "--json"], ["lineage", "ft2"], ["base", "ls", "--json"]):
        assert served.remote(*args).stdout == served.local(*args).stdout, args
    assert json.loads(served.remote("db", "current", "--json").stdout)["up_to_date"] is True

    # pulls rebuild bit-exactly, and the same bytes as a local pull
    served.remote("pull", "ft2", "-o", tmp_path / "remote.safetensors")
    served.local("pull", "ft2", "-o", tmp_path / "local.safetensors")
    assert_bit_equal(load_file(tmp_path / "remote.safetensors"), load_file(tmp_path / "local.safetensors"))
    out = served.remote("pull", "ft2", "--checkpoint", "-o", tmp_path / "ckpt").stdout
    assert out == f"wrote checkpoint ft2@1 to {tmp_path / 'ckpt'}\n"
    assert_bit_equal(load_file(tmp_path / "ckpt" / "model.safetensors"), ck.tensors("ft2"))
    served.local("pull", "ft2", "--checkpoint", "-o", tmp_path / "local-ckpt")
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == sorted(p.name for p in (tmp_path / "local-ckpt").iterdir())
    for written in (tmp_path / "local-ckpt").iterdir():  # model card and shard metadata included
        assert (tmp_path / "ckpt" / written.name).read_bytes() == written.read_bytes(), written.name

    assert served.remote("tag", "ft2@1", "good").stdout == "ft2:good -> ft2@1\n"
    assert json.loads(served.remote("show", "ft2:good", "--json").stdout)["tags"] == ["good"]
    assert served.remote("tag", "ft2", "good", "--delete").stdout == "removed tag ft2:good\n"

    (tmp_path / "r.yaml").write_text(RECIPE)
    assert served.remote("merge", "--recipe", tmp_path / "r.yaml", "--save-as", "m").stdout == "saved merge m@1 as its recipe (rebuilt on read)\n"
    assert [n["label"] for n in json.loads(served.remote("lineage", "m", "--json").stdout)["ancestors"]] == ["ft0@1", "ft1@1"]
    packed = json.loads(served.remote("pack", "ft2", "ft3", "--codec", "rtvq", "--json").stdout)
    assert [p["ref"] for p in packed] == ["ft2@2", "ft3@2"]
    assert json.loads(served.remote("rm", "ft3@1", "--json").stdout) == {"removed": ["ft3@1"]}
    assert json.loads(served.remote("gc", "--dry-run", "--json").stdout)["dry_run"] is True
    assert json.loads(served.remote("verify", "--json").stdout)["ok"] is True

    audit = json.loads(served.remote("audit", "--json").stdout)
    mine = [(e["token"], e["action"], e["target"]) for e in audit if e["target"].startswith(("ft2", "ft3", "m@", "b-"))]
    assert mine == [("admin", "push", "ft2@1"), ("admin", "push", "ft3@1"), ("admin", "base add", "b-again"), ("admin", "tag", "ft2:good"),
                    ("admin", "untag", "ft2:good"), ("admin", "merge", "m@1"), ("admin", "pack", "ft2@2, ft3@2"),
                    ("admin", "rm", "ft3@1")]
    assert {t["name"] for t in json.loads(served.remote("token", "ls", "--json").stdout)} >= {"admin", "reader", "team-a"}
    refused = served.remote("init", expect=2)
    assert _one_line(refused) == f"error: `tvstore init` runs against the registry directly (on the server's machine), not through {served.url}"


def test_a_repush_of_stored_tensors_uploads_nothing(served: Served, tmp_path: Path) -> None:
    ck = served.checkpoints  # type: ignore[attr-defined]
    fresh = {n: t + 0.5 for n, t in ck.tensors("ft0").items()}
    save_file(fresh, tmp_path / "fresh.safetensors")
    with Registry.open(remote=served.url, token=served.tokens["writer"]) as reg:
        assert reg.push("fresh", tmp_path / "fresh.safetensors", base="b").ref == "fresh@1"
        assert reg.blobs.uploads > 0
    with Registry.open(remote=served.url, token=served.tokens["writer"]) as reg:  # a new client: nothing remembered
        assert reg.push("fresh", tmp_path / "fresh.safetensors", base="b").ref == "fresh@2"
        assert (reg.blobs.uploads, reg.blobs.uploaded_bytes) == (0, 0)
        assert [v.version for v in reg.list("fresh", all_versions=True)] == [1, 2]


# ---- security: each refused with the right status, and nothing written ---------------------------------


@pytest.mark.parametrize("token, status, message", [
    (None, 401, "no token: pass --token or set TVSTORE_TOKEN (create one with `tvstore token create`)"),
    ("tvs_not-a-real-token", 401, "token not recognised by this server"),
    ("revoked", 401, "token 'revoked' was revoked"),
    ("expired", 401, "token 'expired' expired at "),
])
def test_requests_without_a_live_token_are_refused(served: Served, token: str | None, status: int, message: str) -> None:
    proc = served.remote("ls", token=token, expect=1)
    assert _one_line(proc).startswith(f"error: {message}")
    with served.http(token) as http:
        response = http.get("/api/vectors")
    assert response.status_code == status and response.json()["error"].startswith(message)


def test_scopes_are_enforced_and_refusals_write_nothing(served: Served) -> None:
    ck = served.checkpoints  # type: ignore[attr-defined]
    before, blobs = _state(served), _blob_count(served)
    cases = [
        (["push", "nope", ck.finetunes["ft3"], "--base", "b"], "reader", "`tvstore push` needs a write token; token 'reader' has scope read"),
        (["rm", "ft0@1"], "writer", "`tvstore rm` needs an admin token; token 'writer' has scope write"),
        (["tag", "ft0@1", "x"], "reader", "`tvstore tag` needs a write token; token 'reader' has scope read"),
        (["gc"], "writer", "`tvstore gc` needs an admin token; token 'writer' has scope write"),
        (["base", "rm", "b"], "writer", "`tvstore base rm` needs an admin token; token 'writer' has scope write"),
        (["base", "add", "b3", ck.base], "writer", "`tvstore base add` needs an admin token; token 'writer' has scope write"),
        (["token", "create", "sneaky", "--scope", "admin"], "writer", "`tvstore token create` needs an admin token; token 'writer' has scope write"),
        (["show", "ft0"], "team-a", "`tvstore show` on 'ft0': token 'team-a' is limited to names matching team-a-*"),
    ]
    for args, token, message in cases:
        assert _one_line(served.remote(*args, token=token, expect=1)) == f"error: {message}", args
    assert json.loads(served.remote("ls", "--json", token="team-a").stdout) == []
    with served.http("reader") as http:
        assert http.delete("/api/vectors/ft0@1").status_code == 403
    assert (_state(served), _blob_count(served)) == (before, blobs)


def test_a_recipe_naming_vectors_the_token_cannot_read_is_refused(served: Served, tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_text(RECIPE)
    before = _state(served)
    proc = served.remote("merge", "--recipe", tmp_path / "r.yaml", "--save-as", "team-a-merge", token="team-a", expect=1)
    assert _one_line(proc) == "error: `tvstore merge --save-as` on 'ft0': token 'team-a' is limited to names matching team-a-*"
    assert _state(served) == before


def test_names_that_could_traverse_paths_are_refused(served: Served) -> None:
    local = served.local("push", "../evil", "x.safetensors", "--base", "b", expect=2)
    remote = served.remote("push", "../evil", "x.safetensors", "--base", "b", expect=2)
    assert remote.stderr == local.stderr  # the same validation, word for word
    before = _state(served)
    pending = pending_to_dict(PendingVector("ok", "b", "finetune", __import__("tvstore.tensors.codec_plan", fromlist=["CodecPlan"]).CodecPlan()))
    with served.http("admin") as http:
        response = http.post("/api/vectors", json={"pending": {**pending, "name": "../../etc/passwd"}, "meta": {}})
        assert response.status_code == 400
        assert response.json()["error"] == (
            "invalid task vector name '../../etc/passwd': it contains the path separator '/'; use letters, digits, '-', '_' and '.' only"
        )
        response = http.get("/api/vectors/..%2F..%2Fetc%2Fpasswd")
        assert response.status_code == 400 and response.json()["error"].startswith("invalid reference '../../etc/passwd'")
        response = http.put("/api/blobs/..%2F..%2Fregistry.db", content=b"x")
        assert response.status_code == 400 and response.json()["error"].startswith("not a blob digest")
    assert _state(served) == before


def test_an_oversized_body_is_refused(served: Served) -> None:
    data = b"\1" * (MAX_BODY + 1)
    digest = hashlib.sha256(data).hexdigest()
    with served.http("writer") as http:
        response = http.put(f"/api/blobs/{digest}", content=data)
        assert response.status_code == 413
        assert response.json()["error"] == f"request body of {MAX_BODY + 1} bytes is over this server's limit of {MAX_BODY} bytes"
        chunked = http.put(f"/api/blobs/{digest}", content=iter([data[:MAX_BODY], data[MAX_BODY:]]))  # no length given
        assert chunked.status_code == 413
        assert http.post("/api/blobs/missing", json={"digests": [digest]}).json()["missing"] == [digest]


def test_a_blob_whose_bytes_do_not_match_its_digest_is_refused(served: Served) -> None:
    good, bad = b"good bytes" * 10, b"evil bytes" * 10
    digest = hashlib.sha256(good).hexdigest()
    before, blobs = _state(served), _blob_count(served)
    with served.http("writer") as http:
        response = http.put(f"/api/blobs/{digest}", content=bad)
        assert response.status_code == 422
        assert response.json()["error"] == (
            f"blob {digest} is corrupt: the uploaded 100 bytes hash to {hashlib.sha256(bad).hexdigest()}; nothing was stored"
        )
        asked = http.post("/api/blobs/missing", json={"digests": [digest]}).json()
        assert asked["missing"] == [digest]
        presigned = asked["upload"].get(digest)
        if presigned:  # S3: the bytes bypass the server, so the commit that would use them checks them
            assert httpx_put(presigned, bad) == 200
            response = http.post("/api/vectors", json={"pending": _pending_using(digest, len(bad)), "meta": {}})
            assert response.status_code == 422
            assert response.json()["error"].startswith(f"blob {digest} is corrupt")
            assert http.post("/api/blobs/missing", json={"digests": [digest]}).json()["missing"] == [digest]
    assert (_state(served), _blob_count(served)) == (before, blobs)


def httpx_put(url: str, data: bytes) -> int:
    import httpx

    return httpx.put(url, content=data).status_code


def _pending_using(digest: str, size: int) -> dict:
    """A one-tensor push whose only blob is ``digest`` (the rest of the fields well-formed)."""
    tensor = {"name": "w0", "role": "delta", "dtype": "F32", "shape": [48, 48], "codec": {"id": "lossless"},
              "raw_bytes": 9216, "stored_bytes": size, "stats": {"ref_sq": 1.0, "rec_sq": 1.0, "err_sq": 0.0, "dot": 1.0},
              "components": [{"codec": {"id": "lossless"}, "blob": digest, "blob_size": size, "scale": 1.0,
                              "mask_blob": None, "mask_size": 0, "kind": "full", "mask_name": None}]}
    return {"name": "tampered", "base": "b", "kind": "finetune", "plan": {"id": "lossless"}, "source_digest": None,
            "parent_digests": {}, "codec_config": None, "tensors": [tensor]}


# ---- many clients, and a crash ----------------------------------------------------------------------------


@pytest.mark.parametrize("served", ["postgres-s3"], indirect=True)
def test_eight_clients_pushing_through_two_workers_get_gap_free_versions(served: Served) -> None:
    """On PostgreSQL + S3, where two workers and eight clients really write side by side (SQLite's single
    writer serializes them anyway); one backend only, as eight CLI processes are the module's dearest test."""
    ck = served.checkpoints  # type: ignore[attr-defined]
    env = served.remote_env("writer")
    procs = [subprocess.Popen([*_cli(), "push", "crowd", str(ck.finetunes[f"ft{i % 4}"]), "--base", "b", "--json"], env=env,
                              cwd=served.workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(8)]
    results = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0] * 8, [r[1] for r in results]
    versions = sorted(json.loads(out)["version"] for out, _ in results)
    assert versions == list(range(1, 9))
    listed = json.loads(served.local("ls", "crowd", "--all-versions", "--json").stdout)
    assert [v["version"] for v in listed] == list(range(1, 9))


def _cli() -> list[str]:
    from conftest import tvstore_executable

    return [tvstore_executable()]


@pytest.mark.parametrize("served", ["sqlite-local"], indirect=True)
def test_a_server_killed_mid_push_leaves_nothing_half_visible_and_the_retry_succeeds(served: Served, tmp_path: Path) -> None:
    """One backend: visibility hangs on the one commit transaction, the same code on both databases."""
    g = torch.Generator().manual_seed(3)
    base = {f"t{i:03d}": torch.randn(128, 128, generator=g) for i in range(120)}
    tuned = {n: t + 0.01 * torch.randn(128, 128, generator=g) for n, t in base.items()}
    save_file(base, tmp_path / "big-base.safetensors")
    save_file(tuned, tmp_path / "big-ft.safetensors")
    served.local("base", "add", "big", tmp_path / "big-base.safetensors")
    lone = Served("", served.env, tmp_path, dict(served.tokens))
    lone.start()  # one worker: SIGKILL takes the whole server down
    try:
        blobs = _blob_count(served)
        push = subprocess.Popen([*_cli(), "push", "victim", str(tmp_path / "big-ft.safetensors"), "--base", "big"],
                                env=lone.remote_env("writer"), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while _blob_count(served) < blobs + 3 and time.monotonic() < deadline and push.poll() is None:
            time.sleep(0.05)
        assert push.poll() is None, f"the push finished before the server could be killed: {push.communicate()}"
        lone.stop(signal.SIGKILL)
        _, stderr = push.communicate(timeout=120)
        assert push.returncode == 1
        assert stderr.count("\n") == 1 and stderr.startswith(f"error: cannot reach {lone.url}: "), stderr
        assert json.loads(served.local("ls", "victim", "--json").stdout) == []  # nothing half-visible
        lone.start()
        retried = json.loads(lone.remote("push", "victim", tmp_path / "big-ft.safetensors", "--base", "big", "--json", token="writer").stdout)
        assert retried["ref"] == "victim@1"
        lone.remote("pull", "victim", "--checkpoint", "-o", tmp_path / "out", token="reader")
        assert_bit_equal(load_file(tmp_path / "out" / "model.safetensors"), tuned)
        assert json.loads(served.local("verify", "--json").stdout)["ok"] is True
    finally:
        lone.stop()


def test_the_remote_registry_mirrors_the_facade() -> None:
    """Every public ``Registry`` method is offered remotely with the same parameters, or named here.

    Server-side-only methods are what the server itself calls; the rest are
    the gap a remote client still has (it answers them with one clear line).
    """
    import inspect

    from tvstore.registry import Registry
    from tvstore.remote import RemoteRegistry

    server_side = {"authenticate", "base_rows", "card", "commit_base", "commit_pushed", "missing_blobs", "record_audit", "vector_rows", "session"}
    not_yet = {"load", "merge", "merger", "pull_per_task", "push_searched", "rebuild", "search_merge", "to_lora"}
    public = {n: f for n, f in inspect.getmembers(Registry, inspect.isfunction) if not n.startswith("_")}
    offered = {n for n in public if n in vars(RemoteRegistry)}
    assert set(public) - offered == server_side | not_yet
    for name in offered:
        assert list(inspect.signature(public[name]).parameters) == list(inspect.signature(vars(RemoteRegistry)[name]).parameters), name

"""``tvstore serve`` and ``--remote``: every command through a real server, security, concurrency, a crash.

One server per backend for the module (SQLite + local folder; PostgreSQL +
moto S3, where blob bytes go through presigned URLs), started as the
installed ``tvstore serve`` with two workers. Clients are the installed CLI
in subprocesses, or ``Registry.open(remote=...)`` in this process, speaking
real HTTP. The administrator's side (seeding the registry, the local results
a remote one must equal) runs in this process on the registry itself, and
refusals are checked over HTTP with the CLI's own wording checked once per
kind: a CLI start-up costs about a second, and the module used to spend most
of its time on them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from sqlalchemy import create_engine, text

from s3_server import s3_server  # noqa: F401  (fixture)
from served import Served, base_env, make_tokens, pg_schema, s3_backend_env
from team_helpers import assert_bit_equal, make_checkpoints

from tvstore import Registry
from tvstore.errors import ForbiddenError, TvstoreError
from tvstore.ops.push import PendingVector
from tvstore.ops.wire import pending_to_dict
from tvstore.tensors.codec_plan import CodecPlan

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
        with s.registry() as reg:  # the administrator seeds it directly
            reg.init()
            reg.add_base("b", ck.base)
            for name in ("ft0", "ft1"):
                reg.push(name, ck.finetunes[name], base="b")
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


def _state(served: Served) -> list[dict]:
    with served.registry() as reg:
        return [v.to_dict() for v in reg.list(all_versions=True)]


def _one_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.stderr.count("\n") == 1, proc.stderr
    return proc.stderr.strip()


def _assert_same_files(got: Path, want: Path) -> None:
    """Two written folders hold the same files, byte for byte (model card and shard metadata included)."""
    assert sorted(p.name for p in got.iterdir()) == sorted(p.name for p in want.iterdir())
    for written in want.iterdir():
        assert (got / written.name).read_bytes() == written.read_bytes(), written.name


# ---- every command, through the server and directly: the same answers ---------------------------------


def test_every_command_through_the_server_matches_local_use(served: Served, tmp_path: Path) -> None:
    ck = served.checkpoints  # type: ignore[attr-defined]
    pushed = json.loads(served.remote("push", "ft2", ck.finetunes["ft2"], "--base", "b", "--meta", "task=c", "--json").stdout)
    assert (pushed["ref"], pushed["meta"]) == ("ft2@1", {"task": "c"})
    with served.client("admin") as client:  # the same client code in this process: no second CLI start-up
        assert client.push("ft3", ck.finetunes["ft3"], base="b", codec="quant:bits=4").ref == "ft3@1"
    added = served.remote("base", "add", "b-again", ck.base).stdout  # its blobs are all there: nothing uploaded
    assert added.startswith("added base b-again: 10 tensors, 23,040 parameters")
    for args in (["ls"], ["lineage", "ft2"]):  # tables and trees: the same text
        assert served.remote(*args).stdout == served.local(*args).stdout, args
    shown = json.loads(served.remote("show", "ft2", "--tensors", "--json").stdout)
    bases = json.loads(served.remote("base", "ls", "--json").stdout)
    with served.registry() as reg:  # --json: the same data as the registry itself gives
        assert shown == {**reg.show("ft2").to_dict(), "tensors": [t.to_dict() for t in reg.tensors("ft2")]}
        assert bases == [b.to_dict() for b in reg.bases()]
    assert json.loads(served.remote("db", "current", "--json").stdout)["up_to_date"] is True

    # pulls rebuild bit-exactly, and the same bytes as a local pull
    assert served.remote("pull", "ft2", "-o", tmp_path / "remote.safetensors").stdout == (
        f"wrote task vector ft2@1 to {tmp_path / 'remote.safetensors'}\n")
    out = served.remote("pull", "ft2", "--checkpoint", "-o", tmp_path / "ckpt").stdout
    assert out == f"wrote checkpoint ft2@1 to {tmp_path / 'ckpt'}\n"
    assert_bit_equal(load_file(tmp_path / "ckpt" / "model.safetensors"), ck.tensors("ft2"))
    with served.registry() as reg:
        reg.pull("ft2", tmp_path / "local.safetensors")
        reg.pull_checkpoint("ft2", tmp_path / "local-ckpt")
    assert (tmp_path / "remote.safetensors").read_bytes() == (tmp_path / "local.safetensors").read_bytes()
    _assert_same_files(tmp_path / "ckpt", tmp_path / "local-ckpt")

    assert served.remote("tag", "ft2@1", "good").stdout == "ft2:good -> ft2@1\n"
    with served.client("admin") as client:  # (merge --save-as through the CLI: test_merges_run_through_...)
        assert client.show("ft2:good").tags == ["good"]
        assert client.save_merge("m", client.recipe(RECIPE)).ref == "m@1"
        assert [n["label"] for n in client.lineage("m")["ancestors"]] == ["ft0@1", "ft1@1"]
    assert served.remote("tag", "ft2", "good", "--delete").stdout == "removed tag ft2:good\n"
    packed = json.loads(served.remote("pack", "ft2", "ft3", "--codec", "rtvq", "--json").stdout)
    assert [p["ref"] for p in packed] == ["ft2@2", "ft3@2"]
    assert json.loads(served.remote("rm", "ft3@1", "--json").stdout) == {"removed": ["ft3@1"]}
    assert json.loads(served.remote("gc", "--dry-run", "--json").stdout)["dry_run"] is True
    assert json.loads(served.remote("verify", "--json").stdout)["ok"] is True

    audit = json.loads(served.remote("audit", "--json").stdout)
    mine = [(e["token"], e["action"], e["target"]) for e in audit if e["target"].startswith(("ft2", "ft3", "m@", "b-"))]
    assert mine == [("admin", "push", "ft2@1"), ("admin", "push", "ft3@1"), ("admin", "base add", "b-again"), ("admin", "tag", "ft2:good"),
                    ("admin", "merge", "m@1"), ("admin", "untag", "ft2:good"), ("admin", "pack", "ft2@2, ft3@2"),
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


# ---- merges and LoRA export: computed on the client from the inputs' blobs ----------------------------------


def test_merges_run_through_the_server_as_they_run_locally(served: Served, tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE)
    # merge --out needs only read: the client binds the recipe to the inputs' rows and merges here
    out = served.remote("merge", "--recipe", recipe, "--out", tmp_path / "merged", token="reader").stdout
    assert out == f"wrote merged model to {tmp_path / 'merged'}\n"
    saved = served.remote("merge", "--recipe", recipe, "--save-as", "m-recipe", token="writer").stdout
    assert saved == "saved merge m-recipe@1 as its recipe (rebuilt on read)\n"
    encoded = served.remote("merge", "--recipe", recipe, "--save-as", "m-coded", "--codec", "lossless", token="writer").stdout
    assert encoded == "saved merge m-coded@1 encoded with lossless\n"
    # a merge saved as its recipe is rebuilt on the client, with a read token
    pulled = served.remote("pull", "m-recipe", "--checkpoint", "-o", tmp_path / "m-recipe", token="reader").stdout
    assert pulled == f"wrote checkpoint m-recipe@1 to {tmp_path / 'm-recipe'}\n"
    with served.client("reader") as client:
        client.pull("m-coded", tmp_path / "m-coded.safetensors")
        merged = dict(client.merge(client.recipe(recipe)))
    with served.registry() as reg:
        reg.merge_to_dir(reg.recipe(recipe), tmp_path / "local-merged")
        reg.pull_checkpoint("m-recipe", tmp_path / "local-m-recipe")
        reg.pull("m-coded", tmp_path / "local-m-coded.safetensors")
        assert [(v.ref, v.codec) for v in reg.list() if v.name.startswith("m-")] == [
            ("m-coded@1", {"id": "lossless", "level": 1}), ("m-recipe@1", {"id": "recipe"})]
    _assert_same_files(tmp_path / "merged", tmp_path / "local-merged")
    _assert_same_files(tmp_path / "m-recipe", tmp_path / "local-m-recipe")
    assert (tmp_path / "m-coded.safetensors").read_bytes() == (tmp_path / "local-m-coded.safetensors").read_bytes()
    # and they are the merge: theta_ft0 - 0.5 (theta_ft1 - theta_base), as the recipe says
    base, ft0, ft1 = load_file(served.checkpoints.base), *(served.checkpoints.tensors(n) for n in ("ft0", "ft1"))  # type: ignore[attr-defined]
    assert_bit_equal(load_file(tmp_path / "merged" / "model.safetensors"), merged)
    assert_bit_equal(load_file(tmp_path / "m-recipe" / "model.safetensors"), merged)
    for name, theta in merged.items():
        torch.testing.assert_close(theta, ft0[name] - 0.5 * (ft1[name] - base[name]), rtol=0, atol=1e-6)


def test_lora_export_and_per_task_heads_through_the_server_are_the_local_ones(served: Served, tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(11)
    base = {f"m{i}.weight": torch.randn(32, 32, generator=g) for i in range(3)}
    save_file(base, tmp_path / "lb.safetensors")
    for task, labels in (("task-x", 2), ("task-y", 3)):  # each with a classifier head of its own shape
        tuned = {n: t + 0.01 * torch.randn(32, 32, generator=g) for n, t in base.items()}
        save_file({**tuned, "head.weight": torch.randn(labels, 32, generator=g)}, tmp_path / f"{task}.safetensors")
    with served.registry() as reg:
        reg.add_base("lora-base", tmp_path / "lb.safetensors")
        for task in ("task-x", "task-y"):
            reg.push(task, tmp_path / f"{task}.safetensors", base="lora-base", extra=True)
        local = reg.to_lora("task-x", tmp_path / "local-lora", rank=4).to_dict()
    proc = served.remote("pull", "task-x", "--lora", "--rank", "4", "--json", "-o", tmp_path / "lora", token="reader")
    remote = json.loads(proc.stdout)
    assert remote == {**local, "out": str(tmp_path / "lora")}
    assert ([(m["module"], m["rank"]) for m in remote["modules"]], remote["modules_to_save"]) == (
        [("m0", 4), ("m1", 4), ("m2", 4)], ["head"])
    _assert_same_files(tmp_path / "lora", tmp_path / "local-lora")

    (tmp_path / "xy.yaml").write_text("method: task_arithmetic\ninputs:\n  - {ref: task-x, weight: 0.5}\n  - {ref: task-y, weight: 0.5}\n")
    saved = served.remote("merge", "--recipe", tmp_path / "xy.yaml", "--save-as", "xy", "--extra-tensors", "drop", token="writer")
    assert saved.stdout == "saved merge xy@1 as its recipe (rebuilt on read)\n"
    head = served.remote("pull", "xy", "--checkpoint", "--head-from", "task-y", "-o", tmp_path / "y", token="reader").stdout
    assert head == f"wrote checkpoint xy@1 to {tmp_path / 'y'}\n"
    with served.client("reader") as client:
        assert client.pull_per_task("xy", tmp_path / "tasks") == [tmp_path / "tasks" / "task-x", tmp_path / "tasks" / "task-y"]
    with served.registry() as reg:
        reg.pull_checkpoint("xy", tmp_path / "local-y", head_from="task-y")
        reg.pull_per_task("xy", tmp_path / "local-tasks")
    _assert_same_files(tmp_path / "y", tmp_path / "local-y")
    for task in ("task-x", "task-y"):
        _assert_same_files(tmp_path / "tasks" / task, tmp_path / "local-tasks" / task)
    assert load_file(tmp_path / "y" / "model.safetensors")["head.weight"].shape == (3, 32)


def test_score_steered_searches_run_on_the_client_as_they_do_locally(served: Served, tmp_path: Path) -> None:
    """``push --target --score-cmd`` and ``merge --search --save-as`` through the server: every trial is rebuilt
    and scored on the client; the trail, the choice and what is stored match the same search run locally."""
    from test_search import SCRIPT

    ck = served.checkpoints  # type: ignore[attr-defined]
    (tmp_path / "score.py").write_text(SCRIPT)
    cmd = f"{sys.executable} {tmp_path / 'score.py'} {{dir}} {ck.finetunes['ft3']} {ck.base}"
    pushed = json.loads(served.remote("push", "searched", ck.finetunes["ft3"], "--base", "b", "--codec", "auto",
                                      "--target", "0.9", "--score-cmd", cmd, "--json", token="writer").stdout)
    (tmp_path / "r.yaml").write_text(RECIPE)
    merged = json.loads(served.remote("merge", "--recipe", tmp_path / "r.yaml", "--search", "lambda=0.5:1.0",
                                      "--score-cmd", cmd, "--save-as", "searched-merge", "--json", token="writer").stdout)
    with served.registry() as reg:
        local = reg.push_searched("searched-local", ck.finetunes["ft3"], base="b", score=cmd, target=0.9)
        best, found, _ = reg.search_merge(tmp_path / "r.yaml", ["lambda=0.5:1.0"], cmd)
        assert reg.show("searched-merge").meta["search"] == merged["search"]
        reg.pull_checkpoint("searched", tmp_path / "local-pull")
    assert pushed["meta"]["search"]["trail"] == local.meta["search"]["trail"]
    assert pushed["codec"] == local.codec and pushed["meta"]["search"]["setting"] == local.meta["search"]["setting"]
    assert merged["search"] == found.to_meta() and merged["recipe"] == best
    served.remote("pull", "searched", "--checkpoint", "-o", tmp_path / "pulled", token="reader")
    _assert_same_files(tmp_path / "pulled", tmp_path / "local-pull")


# ---- security: each refused with the right status, and nothing written ---------------------------------


def test_requests_without_a_live_token_are_refused(served: Served) -> None:
    cases = [(None, "no token: pass --token or set TVSTORE_TOKEN (create one with `tvstore token create`)"),
             ("tvs_not-a-real-token", "token not recognised by this server"), ("revoked", "token 'revoked' was revoked"),
             ("expired", "token 'expired' expired at ")]
    for token, message in cases:
        with served.http(token) as http:
            response = http.get("/api/vectors")
        assert (response.status_code, response.headers["www-authenticate"]) == (401, "Bearer"), token
        assert response.json()["error"].startswith(message), token
    for token, message in cases[::2]:  # the CLI prints the server's line as its one error line
        assert _one_line(served.remote("ls", token=token, expect=1)).startswith(f"error: {message}")


def test_scopes_are_enforced_and_refusals_write_nothing(served: Served) -> None:
    ck = served.checkpoints  # type: ignore[attr-defined]
    before, blobs = _state(served), _blob_count(served)
    cli = [  # refused before the client encodes or uploads anything
        (["push", "nope", ck.finetunes["ft3"], "--base", "b"], "reader", "`tvstore push` needs a write token; token 'reader' has scope read"),
        (["base", "add", "b3", ck.base], "writer", "`tvstore base add` needs an admin token; token 'writer' has scope write"),
    ]
    for args, token, message in cli:
        assert _one_line(served.remote(*args, token=token, expect=1)) == f"error: {message}", args
    http = [  # (method, path, body, token, message): what the CLI sends for rm, tag, gc, base rm, token create, show
        ("DELETE", "/api/vectors/ft0@1", None, "writer", "`tvstore rm` needs an admin token; token 'writer' has scope write"),
        ("DELETE", "/api/vectors/ft0@1", None, "reader", "`tvstore rm` needs an admin token; token 'reader' has scope read"),
        ("POST", "/api/vectors/ft0@1/tags", {"tag": "x"}, "reader", "`tvstore tag` needs a write token; token 'reader' has scope read"),
        ("POST", "/api/gc", {}, "writer", "`tvstore gc` needs an admin token; token 'writer' has scope write"),
        ("DELETE", "/api/bases/b", None, "writer", "`tvstore base rm` needs an admin token; token 'writer' has scope write"),
        ("POST", "/api/tokens", {"name": "sneaky", "scope": "admin"}, "writer",
         "`tvstore token create` needs an admin token; token 'writer' has scope write"),
        ("GET", "/api/vectors/ft0", None, "team-a", "`tvstore show` on 'ft0': token 'team-a' is limited to names matching team-a-*"),
        ("GET", "/api/vectors/ft0@1/rows", None, "team-a", "`tvstore pull` on 'ft0': token 'team-a' is limited to names matching team-a-*"),
    ]
    for method, path, body, token, message in http:
        with served.http(token) as client:
            response = client.request(method, path, json=body)
        assert (response.status_code, response.json()["error"]) == (403, message), (method, path, token)
    assert json.loads(served.remote("ls", "--json", token="team-a").stdout) == []
    assert (_state(served), _blob_count(served)) == (before, blobs)


def test_a_token_narrowed_to_names_reads_only_blobs_its_names_or_bases_use(served: Served, tmp_path: Path) -> None:
    ck = served.checkpoints  # type: ignore[attr-defined]
    with served.client("team-a") as client:  # shares the deltas of w0..w3 with every fine-tune (team_helpers.SHARED)
        assert client.push("team-a-own", ck.finetunes["ft1"], base="b").ref == "team-a-own@1"
    with served.http("admin") as http:
        ft0 = {t["name"]: t["components"][0]["blob_digest"] for t in http.get("/api/vectors/ft0@1/rows").json()["tensors"]}
        base = {t["name"]: t["blob_digest"] for t in http.get("/api/bases/b/rows").json()["tensors"]}
    only_ft0, shared = ft0["w9"], ft0["w0"]
    with served.client("team-a") as client:
        with pytest.raises(ForbiddenError) as refused:
            client.blobs.get(only_ft0)
        assert str(refused.value) == (f"reading blob {only_ft0} (pull, merge, rebuild): token 'team-a' is limited to names matching team-a-*, "
                                      "and no base or vector it covers uses this blob")
        for digest in (shared, base["w9"]):  # used by a vector it covers, or by a base: readable
            assert hashlib.sha256(client.blobs.get(digest)).hexdigest() == digest
        client.pull_checkpoint("team-a-own", tmp_path / "own")
    assert_bit_equal(load_file(tmp_path / "own" / "model.safetensors"), ck.tensors("ft1"))
    with served.client("reader") as client:  # a token not narrowed to names reads any blob
        assert hashlib.sha256(client.blobs.get(only_ft0)).hexdigest() == only_ft0
    with served.http("team-a") as http:
        assert http.get(f"/api/blobs/{only_ft0}").status_code == 403


def test_a_recipe_naming_vectors_the_token_cannot_read_is_refused(served: Served, tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_text(RECIPE)
    before = _state(served)
    proc = served.remote("merge", "--recipe", tmp_path / "r.yaml", "--save-as", "team-a-merge", token="team-a", expect=1)
    assert _one_line(proc) == "error: `tvstore merge --save-as` on 'ft0': token 'team-a' is limited to names matching team-a-*"
    with served.client("team-a") as client, pytest.raises(ForbiddenError) as refused:  # merge --out reads every input
        client.merge_to_dir(client.recipe(tmp_path / "r.yaml"), tmp_path / "merged")
    assert str(refused.value) == "`tvstore pull` on 'ft0': token 'team-a' is limited to names matching team-a-*"
    assert not (tmp_path / "merged").exists()
    assert _state(served) == before


def test_names_that_could_traverse_paths_are_refused(served: Served) -> None:
    local = served.local("push", "../evil", "x.safetensors", "--base", "b", expect=2)
    remote = served.remote("push", "../evil", "x.safetensors", "--base", "b", expect=2)
    assert remote.stderr == local.stderr  # the same validation, word for word
    before = _state(served)
    pending = pending_to_dict(PendingVector("ok", "b", "finetune", CodecPlan()))
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
                              "mask_blob": None, "mask_size": 0, "kind": "add", "mask_name": None}]}
    return {"name": "tampered", "base": "b", "kind": "finetune", "plan": {"id": "lossless"}, "source_digest": None,
            "parent_digests": {}, "codec_config": None, "tensors": [tensor]}


# ---- the audit log: an entry commits with its change, or neither does ------------------------------------------


@contextlib.contextmanager
def _refusing_inserts(served: Served, table: str) -> Iterator[None]:
    """A trigger by which the database itself refuses every insert into ``table``: a failure inside the commit."""
    engine = create_engine(served.env["TVSTORE_DATABASE_URL"])
    if engine.dialect.name == "sqlite":
        create = [f"CREATE TRIGGER refuse_{table} BEFORE INSERT ON {table} BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"]
        drop = f"DROP TRIGGER refuse_{table}"
    else:
        create = ["CREATE OR REPLACE FUNCTION refuse_insert() RETURNS trigger LANGUAGE plpgsql AS "
                  "$$ BEGIN RAISE EXCEPTION 'refused by the test'; END $$",
                  f"CREATE TRIGGER refuse_{table} BEFORE INSERT ON {table} FOR EACH ROW EXECUTE FUNCTION refuse_insert()"]
        drop = f"DROP TRIGGER refuse_{table} ON {table}"
    try:
        with engine.begin() as conn:
            for statement in create:
                conn.execute(text(statement))
        yield
    finally:
        with engine.begin() as conn:
            conn.execute(text(drop))
        engine.dispose()


def test_an_audit_entry_commits_in_the_same_transaction_as_its_change(served: Served) -> None:
    ck = served.checkpoints  # type: ignore[attr-defined]

    def entries(*targets: str) -> list[tuple[str, str, str]]:
        with served.registry() as reg:
            return [(e.token, e.action, e.target) for e in reg.audit() if e.target in targets]

    with _refusing_inserts(served, "tags"), served.client("writer") as client:  # the change fails: no entry
        with pytest.raises(TvstoreError, match="^HTTP 500 from "):
            client.tag("ft0@1", "refused")
    with _refusing_inserts(served, "audit_log"), served.client("writer") as client:  # no entry: no change
        with pytest.raises(TvstoreError, match="^HTTP 500 from "):
            client.tag("ft0@1", "unaudited")
        with pytest.raises(TvstoreError, match="^HTTP 500 from "):
            client.push("audited", ck.finetunes["ft2"], base="b")
    with served.registry() as reg:
        assert reg.show("ft0@1").tags == [] and [v.ref for v in reg.list() if v.name == "audited"] == []
    assert entries("ft0:refused", "ft0:unaudited", "audited@1") == []
    with served.client("writer") as client:  # committed: one entry each, naming the version its transaction numbered
        client.tag("ft0@1", "audited")
        assert client.push("audited", ck.finetunes["ft2"], base="b").ref == "audited@1"
        client.untag("ft0", "audited")
    assert entries("ft0:audited", "audited@1") == [("writer", "tag", "ft0:audited"), ("writer", "push", "audited@1"),
                                                   ("writer", "untag", "ft0:audited")]


# ---- many clients, and a crash ----------------------------------------------------------------------------


@pytest.mark.parametrize("served", ["postgres-s3"], indirect=True)
def test_eight_clients_pushing_through_two_workers_get_gap_free_versions(served: Served) -> None:
    """On PostgreSQL + S3, where two workers and eight clients really write side by side (SQLite's single
    writer serializes them anyway). The clients are eight ``RemoteRegistry`` objects on eight threads of
    this process, each with its own HTTP connection, released together: eight CLI processes cost the
    start-up of eight interpreters and torch imports on a two-core machine, and test nothing more."""
    ck = served.checkpoints  # type: ignore[attr-defined]
    start = threading.Barrier(8)

    def client(i: int) -> int:
        with served.client("writer") as reg:
            reg.check_schema()  # connected before the race starts
            start.wait(timeout=60)
            return reg.push("crowd", ck.finetunes[f"ft{i % 4}"], base="b").version

    with ThreadPoolExecutor(8) as pool:
        versions = sorted(pool.map(client, range(8)))
    assert versions == list(range(1, 9))
    with served.registry() as reg:
        assert [v.version for v in reg.list("crowd", all_versions=True)] == list(range(1, 9))


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
    with served.registry() as reg:
        reg.add_base("big", tmp_path / "big-base.safetensors")
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
        assert [v for v in _state(served) if v["name"] == "victim"] == []  # nothing half-visible
        lone.start()
        with lone.client("writer") as client:
            assert client.push("victim", tmp_path / "big-ft.safetensors", base="big").ref == "victim@1"
        with lone.client("reader") as client:
            client.pull_checkpoint("victim", tmp_path / "out")
        assert_bit_equal(load_file(tmp_path / "out" / "model.safetensors"), tuned)
        with served.registry() as reg:
            assert reg.verify().ok
    finally:
        lone.stop()


def test_the_remote_registry_mirrors_the_facade() -> None:
    """Every public ``Registry`` method is offered remotely with the same parameters, or named here.

    Server-side-only methods are what the server itself calls. Of the offered
    ones, the score-steered searches answer with one clear line (tested above).
    """
    import inspect

    from tvstore.registry import Registry
    from tvstore.remote import RemoteRegistry

    server_side = {"authenticate", "base_rows", "card", "commit_base", "commit_pushed", "may_read_blob", "missing_blobs",
                   "record_audit", "vector_rows", "session"}
    public = {n: f for n, f in inspect.getmembers(Registry, inspect.isfunction) if not n.startswith("_")}
    offered = {n for n in public if n in vars(RemoteRegistry)}
    assert set(public) - offered == server_side
    for name in offered:
        assert list(inspect.signature(public[name]).parameters) == list(inspect.signature(vars(RemoteRegistry)[name]).parameters), name

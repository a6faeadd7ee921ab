"""The JSON API a ``RemoteRegistry`` talks to: one endpoint per facade method, each behind a scope.

Endpoints only parse, authorise, call the same ``Registry`` method a local
command calls (so names, refs and recipes are validated identically) and
audit what changed: a changing call runs under :func:`audited`, so its audit
entry commits in the very transaction that commits the change
(:mod:`tvstore.ops.audit`). Registry calls block, so they run in the thread pool.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tvstore.errors import SchemaError, UsageError
from tvstore.ops.audit import Action, Change, Describe, call_as, new_versions
from tvstore.ops.tokens import TokenInfo
from tvstore.registry import Registry
from tvstore.server.auth import require
from tvstore.util.refs import check_name, parse_ref


def registry_of(request: Request) -> Registry:
    return request.app.state.registry


async def run(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return await run_in_threadpool(fn, *args, **kwargs)


async def body_of(request: Request) -> dict[str, Any]:
    try:
        data = await request.json()
    except ValueError:
        raise UsageError("request body is not JSON") from None
    if not isinstance(data, dict):
        raise UsageError("request body must be a JSON object")
    return data


def _meta(body: dict[str, Any]) -> dict[str, Any]:
    """JSON values under string keys, as ``Registry.push(meta=...)`` takes (a search's record is nested)."""
    meta = body.get("meta") or {}
    if not isinstance(meta, dict):
        raise UsageError("malformed request: 'meta' must be a JSON object")
    return meta


def _ref_name(ref: str) -> str:
    return parse_ref(ref).name


async def audited(token: TokenInfo, action: str, fn: Callable[..., Any], *args: Any, target: str | Describe = new_versions,
                  detail: dict[str, Any] | Describe | None = None) -> Any:
    """``fn(*args)`` in the thread pool; the transaction that commits its change also writes the audit entry."""
    return await run(call_as, Action(token.name, action, target, detail or {}), fn, *args)


def _stored(change: Change) -> dict[str, Any]:
    """A push's entry detail: the codec and stored size of the version it numbered."""
    (vector,) = change.inserted
    return {"codec": vector.codec, "stored_bytes": vector.stored_bytes}


def _removed(change: Change) -> dict[str, Any]:
    return {"removed": [v.label for v in sorted(change.deleted, key=lambda v: (v.name, v.version))]}


# ---- read ------------------------------------------------------------------------------------


async def schema(request: Request) -> JSONResponse:
    await require(request, "read", "db current")
    reg = registry_of(request)
    current, head = await run(reg.schema_revision)
    try:
        await run(reg.check_schema)
        problem = None
    except SchemaError as exc:
        problem = str(exc)
    return JSONResponse({"current": current, "head": head, "problem": problem})


async def list_vectors(request: Request) -> JSONResponse:
    token = await require(request, "read", "ls")
    name = request.query_params.get("name")
    infos = await run(registry_of(request).list, name, request.query_params.get("all") == "1")
    return JSONResponse([i.to_dict() for i in infos if token.covers(i.name)])


async def show(request: Request) -> JSONResponse:
    ref = request.path_params["ref"]
    await require(request, "read", "show", _ref_name(ref))
    return JSONResponse((await run(registry_of(request).show, ref)).to_dict())


async def tensors(request: Request) -> JSONResponse:
    ref = request.path_params["ref"]
    await require(request, "read", "show --tensors", _ref_name(ref))
    return JSONResponse([t.to_dict() for t in await run(registry_of(request).tensors, ref)])


async def lineage(request: Request) -> JSONResponse:
    ref = request.path_params["ref"]
    await require(request, "read", "lineage", _ref_name(ref))
    return JSONResponse(await run(registry_of(request).lineage, ref))


async def vector_rows(request: Request) -> JSONResponse:
    ref = request.path_params["ref"]
    await require(request, "read", "pull", _ref_name(ref))
    return JSONResponse(await run(registry_of(request).vector_rows, ref))


async def card(request: Request) -> JSONResponse:
    ref = request.path_params["ref"]
    head_from = request.query_params.get("head_from")
    await require(request, "read", "pull --checkpoint", _ref_name(ref))
    return JSONResponse(dataclasses.asdict(await run(registry_of(request).card, ref, head_from)))


async def list_bases(request: Request) -> JSONResponse:
    await require(request, "read", "base ls")
    return JSONResponse([b.to_dict() for b in await run(registry_of(request).bases)])


async def show_base(request: Request) -> JSONResponse:
    await require(request, "read", "base show")
    return JSONResponse((await run(registry_of(request).base, request.path_params["name"])).to_dict())


async def base_rows(request: Request) -> JSONResponse:
    await require(request, "read", "pull")
    return JSONResponse(await run(registry_of(request).base_rows, request.path_params["name"]))


# ---- write -----------------------------------------------------------------------------------


async def check_push(request: Request) -> JSONResponse:
    """Asked before a client encodes anything, so a refused push costs nothing."""
    name = check_name(request.path_params["name"], "task vector name")
    token = await require(request, "write", "push", name)
    return JSONResponse({"token": token.name})


async def check_base_add(request: Request) -> JSONResponse:
    """Asked before a client uploads a base's tensors."""
    name = check_name(request.path_params["name"], "base name")
    token = await require(request, "admin", "base add")
    return JSONResponse({"token": token.name, "base": name})


async def commit_base(request: Request) -> JSONResponse:
    from tvstore.blobs.presign import can_presign
    from tvstore.ops.wire import base_from_dict

    token = await require(request, "admin", "base add")
    base, sizes = base_from_dict(await body_of(request))
    reg = registry_of(request)
    info = await audited(token, "base add", reg.commit_base, base, sizes, can_presign(reg.blobs), target=base.name,
                         detail={"tensors": len(base.tensors)})
    return JSONResponse(info.to_dict())


async def commit_push(request: Request) -> JSONResponse:
    from tvstore.blobs.presign import can_presign
    from tvstore.ops.wire import pending_from_dict

    body = await body_of(request)
    pending_data = body.get("pending")
    if not isinstance(pending_data, dict):
        raise UsageError("malformed push: 'pending' must be an object")
    name = check_name(pending_data.get("name"), "task vector name")
    token = await require(request, "write", "push", name)
    pending = pending_from_dict(pending_data)
    meta = _meta(body)
    reg = registry_of(request)
    info = await audited(token, "push", reg.commit_pushed, pending, meta, can_presign(reg.blobs),  # bypassing bytes are hashed
                         detail=_stored)
    return JSONResponse(info.to_dict())


async def tag(request: Request) -> JSONResponse:
    ref = request.path_params["ref"]
    token = await require(request, "write", "tag", _ref_name(ref))
    tag_name = (await body_of(request)).get("tag")
    info = await audited(token, "tag", registry_of(request).tag, ref, tag_name, target=f"{_ref_name(ref)}:{tag_name}",
                         detail={"ref": ref})
    return JSONResponse(info.to_dict())


async def untag(request: Request) -> JSONResponse:
    name, tag_name = request.path_params["name"], request.path_params["tag"]
    token = await require(request, "write", "tag --delete", check_name(name))
    await audited(token, "untag", registry_of(request).untag, name, tag_name, target=f"{name}:{tag_name}")
    return JSONResponse({"removed": f"{name}:{tag_name}"})


async def pack(request: Request) -> JSONResponse:
    body = await body_of(request)
    refs, codec, params = body.get("refs"), body.get("codec"), body.get("params") or {}
    if not isinstance(refs, list) or not isinstance(codec, str) or not isinstance(params, dict):
        raise UsageError("malformed pack: expected refs (list), codec (string), params (object)")
    token = None
    for ref in refs:
        token = await require(request, "write", "pack", _ref_name(ref))
    if token is None:
        token = await require(request, "write", "pack")
    pack_call = functools.partial(registry_of(request).pack, refs, codec, **params)
    infos = await audited(token, "pack", pack_call, detail={"codec": codec, "inputs": refs})
    return JSONResponse([i.to_dict() for i in infos])


async def save_merge(request: Request) -> JSONResponse:
    body = await body_of(request)
    name = check_name(body.get("name"), "task vector name")
    token = await require(request, "write", "merge --save-as", name)
    if not isinstance(body.get("recipe"), dict):
        raise UsageError("recipe: expected a mapping at the top level")
    recipe = registry_of(request).recipe(body["recipe"], body.get("extra_tensors"))
    for ref in recipe.vectors:  # every input must be readable by this token
        await require(request, "read", "merge --save-as", ref.name)
    codec, rules, meta = body.get("codec"), tuple(body.get("codec_rules") or ()), _meta(body)
    info = await audited(token, "merge", registry_of(request).save_merge, name, recipe, codec, rules, meta,
                         detail={"inputs": [str(r) for r in recipe.vectors], "codec": codec})
    return JSONResponse(info.to_dict())


# ---- admin -----------------------------------------------------------------------------------


async def remove(request: Request) -> JSONResponse:
    ref = request.path_params["ref"]
    all_versions = request.query_params.get("all") == "1"
    token = await require(request, "admin", "rm", _ref_name(ref))
    removed = await audited(token, "rm", registry_of(request).remove, ref, all_versions, target=ref, detail=_removed)
    return JSONResponse({"removed": removed})


async def remove_base(request: Request) -> JSONResponse:
    name = request.path_params["name"]
    token = await require(request, "admin", "base rm")
    await audited(token, "base rm", registry_of(request).remove_base, name, target=name)
    return JSONResponse({"removed": name})


async def gc(request: Request) -> JSONResponse:
    from tvstore.ops.gc import DEFAULT_GRACE_SECONDS

    token = await require(request, "admin", "gc")
    body = await body_of(request)
    grace = body.get("grace_seconds")
    report = await run(registry_of(request).gc, DEFAULT_GRACE_SECONDS if grace is None else float(grace), bool(body.get("dry_run")))
    if not report.dry_run:  # gc sweeps in many small transactions: one summary entry after them (ops.audit)
        await run(registry_of(request).record_audit, token.name, "gc", "blobs", {"swept": len(report.swept), "swept_bytes": report.swept_bytes})
    return JSONResponse(report.to_dict())


async def verify(request: Request) -> JSONResponse:
    await require(request, "admin", "verify")
    return JSONResponse((await run(registry_of(request).verify)).to_dict())


async def list_tokens(request: Request) -> JSONResponse:
    await require(request, "admin", "token ls")
    return JSONResponse([t.to_dict() for t in await run(registry_of(request).tokens)])


async def create_token(request: Request) -> JSONResponse:
    token = await require(request, "admin", "token create")
    body = await body_of(request)
    name, scope, names = body.get("name"), body.get("scope"), body.get("names") or []
    info, secret = await audited(token, "token create", registry_of(request).create_token, name, scope, names,
                                 body.get("expires_in"), target=str(name), detail={"scope": scope, "names": names})
    return JSONResponse({"token": info.to_dict(), "secret": secret})


async def revoke_token(request: Request) -> JSONResponse:
    token = await require(request, "admin", "token revoke")
    name = request.path_params["name"]
    info = await audited(token, "token revoke", registry_of(request).revoke_token, name, target=name)
    return JSONResponse(info.to_dict())


async def audit(request: Request) -> JSONResponse:
    await require(request, "admin", "audit")
    limit = request.query_params.get("limit")
    if limit is not None and not limit.isdigit():
        raise UsageError(f"bad limit {limit!r}")
    entries = await run(registry_of(request).audit, int(limit) if limit else None)
    return JSONResponse([e.to_dict() for e in entries])


routes = [
    Route("/api/schema", schema),
    Route("/api/vectors", list_vectors, methods=["GET"]),
    Route("/api/vectors", commit_push, methods=["POST"]),
    Route("/api/check/push/{name:path}", check_push),
    Route("/api/check/base-add/{name:path}", check_base_add),
    Route("/api/vectors/{ref:path}/tensors", tensors),
    Route("/api/vectors/{ref:path}/lineage", lineage),
    Route("/api/vectors/{ref:path}/rows", vector_rows),
    Route("/api/vectors/{ref:path}/card", card),
    Route("/api/vectors/{ref:path}/tags", tag, methods=["POST"]),
    Route("/api/vectors/{ref:path}", show, methods=["GET"]),
    Route("/api/vectors/{ref:path}", remove, methods=["DELETE"]),
    Route("/api/names/{name:path}/tags/{tag}", untag, methods=["DELETE"]),
    Route("/api/bases", list_bases, methods=["GET"]),
    Route("/api/bases", commit_base, methods=["POST"]),
    Route("/api/bases/{name:path}/rows", base_rows),
    Route("/api/bases/{name:path}", show_base, methods=["GET"]),
    Route("/api/bases/{name:path}", remove_base, methods=["DELETE"]),
    Route("/api/pack", pack, methods=["POST"]),
    Route("/api/merges", save_merge, methods=["POST"]),
    Route("/api/gc", gc, methods=["POST"]),
    Route("/api/verify", verify, methods=["POST"]),
    Route("/api/tokens", list_tokens, methods=["GET"]),
    Route("/api/tokens", create_token, methods=["POST"]),
    Route("/api/tokens/{name:path}", revoke_token, methods=["DELETE"]),
    Route("/api/audit", audit),
]

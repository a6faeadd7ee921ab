"""The registry through its Python API, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from tvstore import Registry
from tvstore.errors import AlreadyExistsError, NotFoundError, UsageError


def assert_bit_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert sorted(a) == sorted(b)
    for name in a:
        assert a[name].dtype == b[name].dtype, name
        assert a[name].shape == b[name].shape, name
        assert a[name].contiguous().view(torch.uint8).equal(b[name].contiguous().view(torch.uint8)), name


def test_push_pull_checkpoint_is_bit_exact(registry: Registry, tiny, tmp_path: Path) -> None:
    registry.add_base("bert", tiny.base)
    info = registry.push("alpha", tiny.finetunes["alpha"], base="bert", meta={"task": "toy"})
    assert (info.name, info.version, info.kind, info.base) == ("alpha", 1, "finetune", "bert")
    assert info.rel_l2 == 0.0 and info.cosine == pytest.approx(1.0)
    assert info.meta == {"task": "toy"}
    registry.pull_checkpoint("alpha", tmp_path / "rebuilt")
    assert_bit_equal(tiny.tensors(tmp_path / "rebuilt"), tiny.tensors(tiny.finetunes["alpha"]))
    assert (tmp_path / "rebuilt" / "config.json").read_bytes() == (tiny.base / "config.json").read_bytes()
    assert (tmp_path / "rebuilt" / "tokenizer_config.json").exists()


def test_pulled_task_vector_is_the_exact_delta(registry: Registry, tiny, tmp_path: Path) -> None:
    registry.add_base("bert", tiny.base)
    registry.push("alpha", tiny.finetunes["alpha"], base="bert")
    registry.pull("alpha@1", tmp_path / "tau.safetensors")
    tau = load_file(tmp_path / "tau.safetensors")
    base, ft = tiny.tensors(tiny.base), tiny.tensors(tiny.finetunes["alpha"])
    assert_bit_equal(tau, {k: ft[k] - base[k] for k in base})


def test_versions_increment_and_refs_resolve(registry: Registry, tiny) -> None:
    registry.add_base("bert", tiny.base)
    v1 = registry.push("task", tiny.finetunes["alpha"], base="bert")
    v2 = registry.push("task", tiny.finetunes["beta"], base="bert")
    assert (v1.version, v2.version) == (1, 2)
    assert registry.show("task").version == 2
    assert registry.show("task:latest").version == 2
    assert registry.show("task@1").version == 1
    registry.tag("task@1", "stable")
    assert registry.show("task:stable").version == 1
    registry.tag("task@2", "stable")  # tags move
    assert registry.show("task:stable").version == 2
    assert [i.version for i in registry.list("task", all_versions=True)] == [1, 2]
    assert [(i.name, i.version, i.tags) for i in registry.list()] == [("task", 2, ["stable"])]


def test_extra_tensors_round_trip(registry: Registry, tiny, tmp_path: Path) -> None:
    registry.add_base("bert", tiny.base)
    info = registry.push("head", tiny.with_head, base="bert", extra=True)
    roles = {t.name: t.role for t in registry.tensors("head")}
    assert roles["classifier.weight"] == "extra" and roles["embeddings.word_embeddings.weight"] == "delta"
    assert info.num_tensors == 41
    registry.pull_checkpoint("head", tmp_path / "out")
    assert_bit_equal(tiny.tensors(tmp_path / "out"), load_file(tiny.with_head / "model.safetensors"))


def test_difference_of_two_finetunes(registry: Registry, tiny, tmp_path: Path) -> None:
    registry.add_base("bert", tiny.base)
    registry.push("sft", tiny.finetunes["alpha"], base="bert")
    registry.push("grpo", tiny.finetunes["beta"], base="bert")
    info = registry.push(
        "reasoning", base="bert", from_checkpoint=tiny.finetunes["alpha"], to_checkpoint=tiny.finetunes["beta"]
    )
    assert info.kind == "difference"
    registry.pull("reasoning", tmp_path / "r.safetensors")
    a, b = tiny.tensors(tiny.finetunes["alpha"]), tiny.tensors(tiny.finetunes["beta"])
    assert_bit_equal(load_file(tmp_path / "r.safetensors"), {k: b[k] - a[k] for k in a})
    tree = registry.lineage("reasoning")
    parents = {(n["label"], n["relation"], n.get("weight")) for n in tree["ancestors"]}
    assert parents == {("grpo@1", "difference-of", 1.0), ("sft@1", "difference-of", -1.0)}
    sft_tree = registry.lineage("sft")
    assert [(n["label"], n["relation"]) for n in sft_tree["descendants"]] == [("reasoning@1", "difference-of")]
    assert [(n["label"], n["kind"]) for n in sft_tree["ancestors"]] == [("base bert", "base")]


def test_identical_tensors_are_stored_once(registry: Registry, tiny, blob_dir: Path) -> None:
    registry.add_base("bert", tiny.base)
    count = len(list(registry.blobs.iter_digests()))
    registry.add_base("bert-copy", tiny.base)
    assert len(list(registry.blobs.iter_digests())) == count
    registry.push("a", tiny.finetunes["alpha"], base="bert")
    after_first = len(list(registry.blobs.iter_digests()))
    registry.push("a-again", tiny.finetunes["alpha"], base="bert")
    assert len(list(registry.blobs.iter_digests())) == after_first


def test_remove_gc_and_verify(registry: Registry, tiny) -> None:
    registry.add_base("bert", tiny.base)
    registry.push("a", tiny.finetunes["alpha"], base="bert")
    registry.push("b", tiny.finetunes["beta"], base="bert")
    before = set(registry.blobs.iter_digests())
    with pytest.raises(UsageError, match="say which version"):
        registry.remove("a")
    assert registry.remove("a@1") == ["a@1"]
    with pytest.raises(NotFoundError, match="no task vector named 'a'"):
        registry.show("a")
    dry = registry.gc(grace_seconds=0, dry_run=True)
    assert len(dry.swept) > 0 and set(registry.blobs.iter_digests()) == before
    young = registry.gc(grace_seconds=3600)
    assert young.swept == [] and young.kept_young == len(dry.swept)
    report = registry.gc(grace_seconds=0)
    assert sorted(report.swept) == sorted(dry.swept)
    assert set(registry.blobs.iter_digests()) == before - set(report.swept)
    assert registry.verify().ok
    registry.pull_checkpoint  # b still rebuilds
    assert registry.show("b").version == 1


def test_verify_names_vector_tensor_and_blob_of_a_corrupt_blob(registry: Registry, tiny) -> None:
    registry.add_base("bert", tiny.base)
    registry.push("a", tiny.finetunes["alpha"], base="bert")
    tensor = registry.tensors("a")[0]
    source = registry.delta_tensors("a")
    digest = source.components(tensor.name)[0].blob
    path = registry.blobs.path(digest)
    path.chmod(0o644)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    report = registry.verify()
    assert not report.ok
    assert [(p.digest, p.issue) for p in report.problems] == [(digest, "corrupt")]
    assert report.affected == ["vector a@1"]
    assert f"tensor {tensor.name!r}" in report.problems[0].owners[0]
    from tvstore.errors import CorruptBlobError

    with pytest.raises(CorruptBlobError, match=rf"blob {digest} is corrupt \(vector a@1, tensor '{tensor.name}'\)"):
        source.get(tensor.name)


def test_duplicate_base_and_unknown_base(registry: Registry, tiny) -> None:
    registry.add_base("bert", tiny.base)
    with pytest.raises(AlreadyExistsError, match="base model 'bert' already exists"):
        registry.add_base("bert", tiny.base)
    with pytest.raises(NotFoundError, match=r"unknown base model 'gpt' \(known: bert\)"):
        registry.push("x", tiny.finetunes["alpha"], base="gpt")


def test_base_in_use_cannot_be_removed(registry: Registry, tiny) -> None:
    registry.add_base("bert", tiny.base)
    registry.push("a", tiny.finetunes["alpha"], base="bert")
    with pytest.raises(Exception, match=r"base 'bert' is used by task vectors \(a@1"):
        registry.remove_base("bert")
    registry.remove("a", all_versions=True)
    registry.remove_base("bert")
    assert registry.bases() == []


def test_non_float_tensors_must_match_the_base(registry: Registry, tmp_path: Path) -> None:
    base = {"w": torch.randn(4, 4), "position_ids": torch.arange(8).unsqueeze(0)}
    save_file(base, tmp_path / "base.safetensors")
    ft = {"w": base["w"] + 0.01, "position_ids": base["position_ids"].clone()}
    save_file(ft, tmp_path / "ft.safetensors")
    registry.add_base("b", tmp_path / "base.safetensors")
    info = registry.push("v", tmp_path / "ft.safetensors", base="b")
    assert [t.name for t in registry.tensors("v")] == ["w"]  # not stored twice
    assert info.num_tensors == 1
    registry.pull_checkpoint("v", tmp_path / "out")
    assert_bit_equal(load_file(tmp_path / "out" / "model.safetensors"), ft)


def test_bf16_push_is_bit_exact_despite_rounding(registry: Registry, tmp_path: Path) -> None:
    """bf16 ``base + (ft - base)`` misses ft for some entries; the one ``xor`` component rebuilds ft exactly.

    Its tau is still the bf16 ``ft - base`` that merges read."""
    g = torch.Generator().manual_seed(1)
    base = {"w": (torch.randn(256, 64, generator=g) * 0.05).bfloat16(), "z": torch.zeros(8, dtype=torch.bfloat16)}
    ft = {"w": (base["w"].float() + torch.randn(256, 64, generator=g) * 1e-3).bfloat16(), "z": -torch.zeros(8, dtype=torch.bfloat16)}
    assert not torch.equal((base["w"] + (ft["w"] - base["w"])).view(torch.int16), ft["w"].view(torch.int16))
    save_file(base, tmp_path / "base.safetensors")
    save_file(ft, tmp_path / "ft.safetensors")
    registry.add_base("b", tmp_path / "base.safetensors")
    registry.push("v", tmp_path / "ft.safetensors", base="b")
    assert {t.name: t.components for t in registry.tensors("v")} == {"w": 1, "z": 1}
    source = registry.delta_tensors("v")
    assert [c.kind for c in source.components("w")] == ["xor"]
    assert torch.equal(source.get("w").view(torch.int16), (ft["w"] - base["w"]).view(torch.int16))
    registry.pull_checkpoint("v", tmp_path / "out")
    assert_bit_equal(load_file(tmp_path / "out" / "model.safetensors"), ft)


def test_sharded_checkpoint_in_and_out(registry: Registry, tiny, tmp_path: Path) -> None:
    registry.add_base("bert", tiny.base)
    registry.push("a", tiny.finetunes["alpha"], base="bert")
    registry.pull_checkpoint("a", tmp_path / "sharded", max_shard_bytes=20_000)
    shards = sorted(p.name for p in (tmp_path / "sharded").glob("*.safetensors"))
    assert len(shards) > 3 and shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
    registry.push("a", tmp_path / "sharded", base="bert")  # a sharded directory pushes too
    registry.pull_checkpoint("a@2", tmp_path / "single")
    assert_bit_equal(tiny.tensors(tmp_path / "single"), tiny.tensors(tiny.finetunes["alpha"]))


def test_rebuilt_checkpoint_loads_in_transformers(registry: Registry, tiny, tmp_path: Path) -> None:
    from transformers import BertModel

    registry.add_base("bert", tiny.base)
    registry.push("a", tiny.finetunes["alpha"], base="bert")
    registry.pull_checkpoint("a", tmp_path / "out", max_shard_bytes=30_000)
    ids = torch.arange(10).unsqueeze(0)
    with torch.no_grad():
        got = BertModel.from_pretrained(tmp_path / "out", local_files_only=True).eval()(input_ids=ids).last_hidden_state
        want = BertModel.from_pretrained(tiny.finetunes["alpha"], local_files_only=True).eval()(input_ids=ids).last_hidden_state
    assert torch.equal(got, want)


def test_base_buffers_the_finetune_lacks_stay_absent(registry: Registry, tmp_path: Path) -> None:
    """transformers often does not save ``position_ids``; the rebuild must not invent it."""
    base = {"w": torch.randn(4, 4), "embeddings.position_ids": torch.arange(8).unsqueeze(0)}
    save_file(base, tmp_path / "base.safetensors")
    ft = {"w": base["w"] * 1.01}
    save_file(ft, tmp_path / "ft.safetensors")
    registry.add_base("b", tmp_path / "base.safetensors")
    info = registry.push("v", tmp_path / "ft.safetensors", base="b")
    assert info.num_tensors == 1
    registry.pull_checkpoint("v", tmp_path / "out")
    assert_bit_equal(load_file(tmp_path / "out" / "model.safetensors"), ft)
    registry.pull("v", tmp_path / "tau.safetensors")
    assert list(load_file(tmp_path / "tau.safetensors")) == ["w"]

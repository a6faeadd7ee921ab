"""tvstore's merges against mergekit's on the same tiny checkpoints.

A 2-layer Llama (hidden 32) and three fine-tunes of it are written as full
safetensors checkpoints; mergekit merges the checkpoints, tvstore merges the
task vectors (ft - base) with the same YAML recipe. Deterministic methods must
agree to 1e-6 relative, tensor by tensor, and give identical logits when
loaded with transformers; DARE (random) is compared statistically.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from pathlib import Path

import pytest
import torch
import transformers
import yaml
from mergekit.config import MergeConfiguration  # noqa: E402
from mergekit.merge import run_merge  # noqa: E402
from mergekit.options import MergeOptions  # noqa: E402

from tvstore.checkpoint import open_checkpoint, write_checkpoint_dir  # noqa: E402
from tvstore.merge import Merger, load_recipe, materialize  # noqa: E402

FTS = ("ft0", "ft1", "ft2")


class TauSource:
    """A fine-tune checkpoint seen as its task vector against the base."""

    def __init__(self, ft, base) -> None:
        self.ft, self.base = ft, base

    def names(self) -> list[str]:
        return self.ft.names()

    def info(self, name: str):
        return self.ft.info(name)

    def get(self, name: str) -> torch.Tensor:
        return self.ft.get(name) - self.base.get(name)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mk")
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=64, max_position_embeddings=64, tie_word_embeddings=False,
    )
    model = transformers.LlamaForCausalLM(cfg)
    model.save_pretrained(root / "base")
    base_state = {k: v.clone() for k, v in model.state_dict().items()}
    for i, name in enumerate(FTS):
        with torch.no_grad():
            for k, p in model.named_parameters():
                # mixed signs and scales so sign election and trimming matter
                p.copy_(base_state[k] + torch.randn_like(p) * 0.02 * (i + 1) + (0.01 if i == 1 else 0.0))
        model.save_pretrained(root / name)
    return root


def run_mergekit(root: Path, recipe: str, out: str) -> Path:
    config = MergeConfiguration.model_validate(yaml.safe_load(recipe))
    # mergekit resolves model paths relative to the working directory
    cwd = os.getcwd()
    os.chdir(root)
    try:
        run_merge(config, out, MergeOptions(copy_tokenizer=False, write_model_card=False, quiet=True, random_seed=0))
    finally:
        os.chdir(cwd)
    return root / out


def run_tvstore(root: Path, recipe: str, **kw) -> dict[str, torch.Tensor]:
    base = open_checkpoint(root / "base")
    rec = load_recipe(recipe)
    sources = [TauSource(open_checkpoint(root / r.name), base) for r in rec.vectors]
    return dict(materialize(Merger(rec, base, sources), **kw))


def assert_close(ours: dict[str, torch.Tensor], theirs_dir: Path) -> None:
    theirs = open_checkpoint(theirs_dir)
    assert set(ours) == set(theirs.names())
    for name in theirs.names():
        a, b = ours[name], theirs.get(name)
        assert a.dtype == b.dtype and a.shape == b.shape, name
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6 * b.abs().max().item(), msg=name)


TIES = """
merge_method: ties
base_model: base
models:
  - model: base
  - model: ft0
    parameters: {weight: 0.7, density: 0.5}
  - model: ft1
    parameters: {weight: [0.2, 0.8], density: 0.3}
  - model: ft2
    parameters:
      weight: 0.5
      density: [{filter: mlp, value: 0.9}, {value: 0.4}]
parameters: {lambda: 0.9}
"""

CASES = {
    "task_arithmetic": """
merge_method: task_arithmetic
base_model: base
models:
  - model: ft0
    parameters: {weight: 1.0}
  - model: ft1
    parameters: {weight: -0.5}
  - model: ft2
    parameters:
      weight: [{filter: self_attn, value: [0.1, 0.9]}, {value: 0.3}]
""",
    "linear": """
merge_method: linear
models:
  - model: ft0
    parameters: {weight: 0.6}
  - model: ft1
    parameters: {weight: 0.4}
""",
    "ties": TIES,
    "ties_unnormalized": TIES.replace("lambda: 0.9", "lambda: 1.3, normalize: false"),
    "breadcrumbs": """
merge_method: breadcrumbs
base_model: base
models:
  - model: ft0
    parameters: {weight: 0.5, density: 0.6, gamma: 0.05}
  - model: ft2
    parameters: {weight: 0.5, density: 0.8}
""",
    "magnitude_ties_rescale": """
merge_method: breadcrumbs_ties
base_model: base
models:
  - model: ft0
    parameters: {weight: 0.5, density: 0.6, gamma: 0.0}
  - model: ft1
    parameters: {weight: 0.5, density: 0.3, gamma: 0.1}
parameters: {rescale: true}
""",
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_mergekit(models: Path, case: str) -> None:
    recipe = CASES[case]
    theirs = run_mergekit(models, recipe, f"out-{case}")
    tv_recipe = recipe if "base_model" in recipe else recipe.replace("merge_method: linear", "merge_method: linear\nbase_model: base")
    ours = run_tvstore(models, tv_recipe)
    assert_close(ours, theirs)


def test_threaded_equals_serial(models: Path) -> None:
    serial = run_tvstore(models, TIES, workers=1)
    threaded = run_tvstore(models, TIES, workers=2, lookahead=3)
    assert list(serial) == list(threaded)
    for k in serial:
        assert torch.equal(serial[k], threaded[k])


def test_logits_match_after_loading(models: Path, tmp_path: Path) -> None:
    theirs = run_mergekit(models, TIES, "out-logits")
    base = open_checkpoint(models / "base")
    rec = load_recipe(TIES)
    merger = Merger(rec, base, [TauSource(open_checkpoint(models / r.name), base) for r in rec.vectors])
    side = [(str(p), (base.path / p).read_bytes()) for p in base.side_files()]
    ours = write_checkpoint_dir(tmp_path / "ours", merger.infos(), materialize(merger), side_files=side)
    ids = torch.arange(16).reshape(2, 8)
    logits = []
    for d in (ours, theirs):
        m = transformers.AutoModelForCausalLM.from_pretrained(d, local_files_only=True).eval()
        with torch.no_grad():
            logits.append(m(ids).logits)
    torch.testing.assert_close(logits[0], logits[1], rtol=1e-5, atol=1e-5)


def test_dare_statistics_match(models: Path) -> None:
    """DARE draws differ between tools; the keep rate and rescaled mass must not."""
    recipe = """
merge_method: dare_linear
base_model: base
models:
  - model: ft0
    parameters: {weight: 1.0, density: 0.3}
"""
    theirs = open_checkpoint(run_mergekit(models, recipe, "out-dare"))
    ours = run_tvstore(models, recipe)
    base, ft = open_checkpoint(models / "base"), open_checkpoint(models / "ft0")
    name = "model.layers.0.mlp.up_proj.weight"
    tau = ft.get(name) - base.get(name)
    for merged in (ours[name], theirs.get(name)):
        delta = merged - base.get(name)
        kept = (delta.abs() > 1e-9).float().mean().item()
        assert abs(kept - 0.3) < 0.03
        # L1 rescale (mergekit's rule): the kept entries carry the whole L1 mass
        assert delta.abs().sum().item() == pytest.approx(tau.abs().sum().item(), rel=1e-4)
    assert not torch.equal(ours[name], theirs.get(name))


def registry_merger(reg, recipe):
    """What ``Registry.merge`` does: the base and vector sources of a recipe, bound to a Merger."""
    from sqlalchemy import select

    from tvstore.db.models import BaseModel
    from tvstore.util.refs import Ref
    from tvstore.tensors.sources import BaseSource

    vectors = [reg.delta_tensors(str(r)) for r in recipe.vectors]
    base_name = recipe.base.name if recipe.base else vectors[0].vector.base.name
    recipe = recipe.with_base(Ref(base_name))
    with reg.session() as session:
        row = session.scalar(select(BaseModel).where(BaseModel.name == base_name))
        _ = row.tensors, row.files
    return Merger(recipe, BaseSource(row, reg.blobs), vectors)


def test_from_registry_lossless_matches_mergekit(models: Path, tmp_path: Path) -> None:
    """The same TIES merge from the registry's compressed (lossless) vectors: still exact."""
    from tvstore.registry import Registry

    theirs = run_mergekit(models, TIES, "out-registry")
    with Registry.open(home=tmp_path / "home") as reg:
        reg.init()
        reg.add_base("base", models / "base")
        for name in FTS:
            reg.push(name, models / name, base="base", codec="lossless")
        merger = registry_merger(reg, load_recipe(TIES))
        assert_close(dict(materialize(merger)), theirs)


@pytest.mark.parametrize("levels", [None, 0.01], ids=["continuous", "tied"])
@pytest.mark.parametrize("norm", [None, "l1"])
def test_magnitude_trim_is_mergekits_bit_for_bit(levels: float | None, norm: str | None) -> None:
    """The partial-sort trim keeps exactly mergekit's argsort picks, ties at the threshold included."""
    from mergekit.sparsify import RescaleNorm
    from mergekit.sparsify import magnitude as mk_magnitude

    from tvstore.merge import sparsify as sp

    gen = torch.Generator().manual_seed(3)
    tau = torch.randn(257, 129, generator=gen) * 0.02
    if levels is not None:  # few distinct magnitudes: the k-th one is shared, so the sort's order decides
        tau = torch.round(tau / levels) * levels
    mk_norm = RescaleNorm.l1 if norm else None
    for density in (0.01, 0.2, 0.5, 0.9):
        expected = mk_magnitude(tau, density, mk_norm)
        assert torch.equal(sp.magnitude(tau, density, norm), expected)
        owned = tau.clone()
        assert torch.equal(sp.magnitude(owned, density, norm, inplace=True), expected)
        assert torch.equal(owned, expected)  # the row was overwritten, not copied

"""LoRA export: any stored task vector as a PEFT LoRA adapter directory.

Serving stacks (vLLM, TGI, PEFT's multi-adapter loading) take adapters, not
deltas, so each changed 2-D weight's tau is written as LoRA factors from a
truncated SVD: ``lora_B @ lora_A = U_r S_r V_r^T`` (balanced factors, scale 1,
``lora_alpha = r``). The rank is fixed (``rank``) or chosen per module
(``rank=None`` with ``max_error``): the smallest rank whose relative L2 error
``sqrt(1 - kept energy)`` is at most ``max_error``; modules whose ranks differ
from the adapter's ``r`` get ``rank_pattern``/``alpha_pattern`` entries.

A tensor stored as low-rank factors already (a pushed LoRA adapter, the
``lowrank`` codec) is exported with its own factors when the requested rank
allows, so LoRA in -> LoRA out gives the same factors back.

Module naming follows :mod:`tvstore.checkpoint.peft` (the reader of the same
format): keys are ``base_model.model.<base tensor name minus .weight>``, so
the adapter loads onto the model class the base checkpoint was saved from.
Weights whose module name says embedding (``*embed*``, ``wte``, ``wpe``, and the
``relative_attention_bias`` tables of T5 and MPNet) are
exported as ``lora_embedding_A/B``; every other 2-D weight as a Linear.
Tensors the base lacks (a new head) go whole into ``modules_to_save``, which
PEFT restores when the model class has that module. What an adapter cannot
hold (changes to biases and norms, weights outside ``target_modules``) is
listed as ``dropped`` and counted in the whole-vector error.
"""

from __future__ import annotations

import fnmatch
import json
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from tvstore.checkpoint.peft import CONFIG_NAME, PREFIX, WEIGHTS_NAME
from tvstore.checkpoint.reader import TensorInfo
from tvstore.checkpoint.writer import staged_dir, write_safetensors
from tvstore.codecs.lowrank import matrix_shape, payload_factors, svd_factors
from tvstore.errors import UsageError
from tvstore.ops.model_card import CARD_NAME, ModelCard
from tvstore.tensors.sources import VectorSource
from tvstore.util.parallel import ordered_map
from tvstore.util.progress import Progress, no_progress

if TYPE_CHECKING:
    from tvstore.ops.merges import RecipeSource

    Source = VectorSource | RecipeSource  # a stored vector, or a merge saved as its recipe

_EMBEDDING_WORDS = ("embed", "wte", "wpe", "relative_attention_bias")  # the last: nn.Embedding in T5, MPNet


@dataclass(frozen=True)
class LoraSpec:
    """What to export: a fixed ``rank``, or ``rank=None`` with ``max_error`` (per-module rank)."""

    rank: int | None = 16
    max_error: float | None = None
    target_modules: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.rank is None and self.max_error is None:
            raise UsageError("--rank auto needs --max-error (largest relative L2 error per module)")
        if self.rank is not None and self.max_error is not None:
            raise UsageError("--max-error goes with --rank auto")
        if self.rank is not None and (not isinstance(self.rank, int) or self.rank < 1):
            raise UsageError(f"--rank must be a positive integer or 'auto', got {self.rank!r}")
        if self.max_error is not None and not 0 < self.max_error < 1:
            raise UsageError(f"--max-error must be in (0, 1), got {self.max_error!r}")

    @classmethod
    def parse(cls, rank: str | int, max_error: float | None = None, target_modules: tuple[str, ...] = ()) -> LoraSpec:
        """``rank`` as the CLI spells it: an integer or ``auto``."""
        if rank == "auto":
            return cls(None, max_error, tuple(target_modules))
        try:
            value = int(rank)
        except ValueError:
            raise UsageError(f"--rank must be a positive integer or 'auto', got {rank!r}") from None
        return cls(value, max_error, tuple(target_modules))


@dataclass(frozen=True)
class ModuleExport:
    """One adapted module: its rank and what the truncation kept and lost (against the stored tau)."""

    module: str
    kind: str  # "linear" | "embedding"
    shape: list[int]
    rank: int
    kept_energy: float
    rel_l2: float
    exact: bool  # the stored factors themselves


@dataclass
class LoraExport:
    """What ``pull --lora`` wrote, module by module."""

    vector: str
    base: str
    out: str
    rank: int | str
    modules: list[ModuleExport] = field(default_factory=list)
    modules_to_save: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    rel_l2: float = 0.0  # whole vector: every delta tensor, dropped ones included

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def module_name(tensor: str) -> str:
    """The PEFT module path of a base weight (``a.b.query.weight`` -> ``a.b.query``)."""
    return tensor.removesuffix(".weight")


def _is_embedding(module: str) -> bool:
    last = module.rsplit(".", 1)[-1].lower()
    return any(word in last for word in _EMBEDDING_WORDS)


def _targeted(module: str, patterns: tuple[str, ...]) -> bool:
    """PEFT's ``target_modules`` rule (the name or a dotted suffix of it), plus shell globs."""
    return not patterns or any(
        module == p or module.endswith("." + p) or fnmatch.fnmatchcase(module, p) for p in patterns
    )


def _candidates(vector: Source, spec: LoraSpec) -> tuple[list[str], list[str], list[str]]:
    """(tensors to adapt, extras for modules_to_save, deltas an adapter cannot hold)."""
    adapt, extras, dropped = [], [], []
    for name in vector.names():
        info = vector.info(name)
        if vector.is_extra(name):
            extras.append(name)
        elif len(info.shape) == 2 and name.endswith(".weight") and _targeted(module_name(name), spec.target_modules):
            adapt.append(name)
        else:
            dropped.append(name)
    for pattern in spec.target_modules:
        if not any(_targeted(module_name(n), (pattern,)) for n in adapt):
            raise UsageError(f"--target-modules {pattern!r} matches no 2-D weight of {vector.label}")
    return adapt, extras, dropped


def _stored_factors(vector: Source, name: str, rank: int | None) -> tuple[torch.Tensor, torch.Tensor, float] | None:
    """The tensor's own low-rank factors when it is one plain ``lowrank`` component within ``rank``."""
    components = vector.components(name) if isinstance(vector, VectorSource) else []
    if len(components) != 1:
        return None
    (comp,) = components
    if comp.codec.get("id") != "lowrank" or comp.mask_blob is not None or comp.scale != 1.0:
        return None
    factors = payload_factors(vector.fetch(name)(comp.blob))
    if factors is None or (rank is not None and factors[0].shape[1] > rank):
        return None
    return factors


@dataclass(frozen=True)
class _Factors:
    b: torch.Tensor  # (m x r), oriented like the base weight
    a: torch.Tensor  # (r x n)
    scale: float
    report: ModuleExport
    sq_error: float  # ||tau - approx||^2, for the whole-vector error
    sq_norm: float


def _factorize(vector: Source, name: str, spec: LoraSpec) -> _Factors | None:
    info = vector.info(name)
    tau = vector.get(name).to(torch.float32).reshape(matrix_shape(info.shape))
    sq_norm = float(tau.double().pow(2).sum())
    if sq_norm == 0.0:
        return None  # the vector leaves this weight alone
    stored = _stored_factors(vector, name, spec.rank)
    if stored is not None:
        b, a, scale = stored
    else:
        energy = None if spec.max_error is None else 1.0 - spec.max_error**2
        b, a = svd_factors(tau, spec.rank, energy)
        scale = 1.0
    approx = (b.double() @ a.double()) * scale
    sq_error = float((tau.double() - approx).pow(2).sum())
    module = module_name(name)
    report = ModuleExport(
        module, "embedding" if _is_embedding(module) else "linear", list(info.shape), int(a.shape[0]),
        min(1.0, float(approx.pow(2).sum()) / sq_norm), math.sqrt(sq_error / sq_norm), stored is not None,
    )
    return _Factors(b, a, scale, report, sq_error, sq_norm)


def _adapter_tensors(factors: list[_Factors]) -> dict[str, torch.Tensor]:
    """PEFT's key names (the same ones :func:`tvstore.checkpoint.peft.read_adapter` reads)."""
    out = {}
    for f in factors:
        key = PREFIX + f.report.module
        if f.report.kind == "embedding":  # W (vocab x dim) = (lora_embedding_B @ lora_embedding_A).T
            out[f"{key}.lora_embedding_A"] = f.b.T.contiguous()
            out[f"{key}.lora_embedding_B"] = f.a.T.contiguous()
        else:
            out[f"{key}.lora_A.weight"] = f.a.contiguous()
            out[f"{key}.lora_B.weight"] = f.b.contiguous()
    return out


def _config(factors: list[_Factors], modules_to_save: list[str], base: str) -> dict[str, Any]:
    """``r`` is the most common rank; other ranks and every non-unit scale go in the patterns."""
    ranks = [f.report.rank for f in factors]
    r = max(set(ranks), key=lambda x: (ranks.count(x), x)) if ranks else 1
    rank_pattern, alpha_pattern = {}, {}
    for f in factors:
        key = f.report.module.replace(".", r"\.")  # PEFT reads pattern keys as regular expressions
        if f.report.rank != r:
            rank_pattern[key] = f.report.rank
        if f.report.rank != r or f.scale != 1.0:
            alpha_pattern[key] = f.scale * f.report.rank  # scale = alpha / r
    return {
        "peft_type": "LORA", "task_type": None, "base_model_name_or_path": base, "inference_mode": True,
        "r": r, "lora_alpha": r, "lora_dropout": 0.0, "bias": "none", "fan_in_fan_out": False, "use_rslora": False,
        "target_modules": sorted(f.report.module for f in factors), "rank_pattern": rank_pattern,
        "alpha_pattern": alpha_pattern, "modules_to_save": modules_to_save or None, "init_lora_weights": True,
    }


def export_lora(vector: Source, spec: LoraSpec, out: Path, card: ModelCard,
                progress: Progress = no_progress) -> LoraExport:
    """Write ``out/adapter_config.json``, ``out/adapter_model.safetensors`` and a model card."""
    adapt, extras, dropped = _candidates(vector, spec)
    if not adapt and not extras:
        raise UsageError(f"{vector.label} changes no 2-D weight and holds no extra tensor: nothing to export as LoRA")
    with staged_dir(out) as staging:
        with progress(f"exporting {vector.label} as LoRA", len(adapt)) as advance:
            factors = []
            for result in ordered_map(lambda n: _factorize(vector, n, spec), adapt):
                if result is not None:
                    factors.append(result)
                advance(1)
        report = _report(vector, spec, out, factors, extras, dropped)
        tensors = _adapter_tensors(factors) | {PREFIX + n: vector.get(n).contiguous() for n in extras}
        infos = [TensorInfo(k, v.dtype, tuple(v.shape)) for k, v in tensors.items()]
        card = _with_lora_facts(card, report)
        write_safetensors(staging / WEIGHTS_NAME, infos, tensors.items(), card.metadata())
        config = _config(factors, report.modules_to_save, card.base)
        (staging / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
        (staging / CARD_NAME).write_text(card.readme())
    return report


def _owner(tensor: str) -> str:
    """The module a parameter belongs to (``classifier.weight`` -> ``classifier``)."""
    return tensor.rsplit(".", 1)[0] if "." in tensor else tensor


def _report(vector: Source, spec: LoraSpec, out: Path, factors: list[_Factors], extras: list[str],
            dropped: list[str]) -> LoraExport:
    """Per-module numbers, and the whole vector's error with every dropped delta counted as lost."""
    lost = sum(float(vector.get(n).double().pow(2).sum()) for n in dropped)
    sq_error = sum(f.sq_error for f in factors) + lost
    sq_norm = sum(f.sq_norm for f in factors) + lost
    return LoraExport(
        vector.label, vector.vector.base.name, str(out), "auto" if spec.rank is None else spec.rank,
        [f.report for f in factors], sorted({_owner(n) for n in extras}), dropped,
        math.sqrt(sq_error / sq_norm) if sq_norm else 0.0,
    )


def _with_lora_facts(card: ModelCard, report: LoraExport) -> ModelCard:
    facts = {**card.facts, "export": "peft-lora", "rank": report.rank, "lora_rel_l2": report.rel_l2,
             "modules": len(report.modules)}
    return replace(card, facts=facts, tags=(*card.tags, "lora", "peft"), library_name="peft")

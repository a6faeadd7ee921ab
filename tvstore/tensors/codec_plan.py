"""Which codec each tensor gets: a default plus name-pattern rules (first match wins).

Lets a user keep embeddings and norms lossless while quantizing the rest; the
plan's config is stored with the vector, the chosen codec with each tensor.
Patterns are shell globs matched without regard to case (``*norm*`` finds
BERT's ``LayerNorm`` and Llama's ``input_layernorm`` alike), and a rule that
matches no tensor of the checkpoint is refused (:meth:`CodecPlan.check`):
it is a typo that would otherwise store those tensors with the default codec.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from tvstore.checkpoint.reader import TensorInfo
from tvstore.codecs.base import Codec, check_param_names, get_codec
from tvstore.codecs.lossless import Lossless
from tvstore.codecs.spec import parse_codec_spec, split_codec_spec
from tvstore.errors import CodecError, UsageError
from tvstore.tensors.metrics import ErrorStats
from tvstore.util.bounds import NON_NEGATIVE


@dataclass(frozen=True)
class AutoCodec:
    """``--codec auto``: per tensor, the smallest codec whose relative L2 error is at most ``max_error``.

    Not a codec itself (it writes no format of its own); the codec it picks is
    recorded with each tensor.
    """

    max_error: float = 0.1

    def __post_init__(self) -> None:
        try:
            NON_NEGATIVE.check("max_error", self.max_error)
        except ValueError as exc:
            raise CodecError(f"codec 'auto': {exc}") from None

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> AutoCodec:
        check_param_names("auto", params, {"max_error"})
        return cls(**params)

    def choose(self, tau: torch.Tensor) -> tuple[Codec, bytes, ErrorStats]:
        from tvstore.tensors.auto_codec import choose_codec

        return choose_codec(tau, max_error=self.max_error)

    def get_config(self) -> dict[str, Any]:
        return {"id": "auto", "max_error": self.max_error}


def parse_plan_codec(spec: str) -> Codec | AutoCodec:
    """A codec spec, or ``auto[:max_error=E]``."""
    codec_id, params = split_codec_spec(spec)
    if codec_id == "auto":
        return AutoCodec.from_params(params)
    return parse_codec_spec(spec, also=("auto",))


PlanCodec = Codec | AutoCodec


@dataclass(frozen=True)
class CodecPlan:
    default: PlanCodec = field(default_factory=Lossless)
    rules: tuple[tuple[str, PlanCodec], ...] = ()

    def codec_for(self, name: str) -> PlanCodec:
        for pattern, codec in self.rules:
            if _matches(name, pattern):
                return codec
        return self.default

    def check(self, infos: Sequence[TensorInfo]) -> None:
        """Before anything is encoded: every rule matches some tensor, every codec suits its tensors' shapes."""
        for pattern, _ in self.rules:
            if not any(_matches(i.name, pattern) for i in infos):
                raise UsageError(f"--codec-for {pattern!r} matches no tensor of the checkpoint "
                                 f"(a case-insensitive glob over tensor names, e.g. '*layernorm*')")
        shapes: dict[int, tuple[PlanCodec, list[tuple[int, ...]]]] = {}
        for info in infos:
            codec = self.codec_for(info.name)
            shapes.setdefault(id(codec), (codec, []))[1].append(tuple(info.shape))
        for codec, group in shapes.values():
            if isinstance(codec, Codec):
                try:
                    codec.check_shapes(group)
                except ValueError as exc:
                    raise CodecError(f"codec {codec.codec_id!r}: {exc}") from None

    def get_config(self) -> dict[str, Any]:
        config = self.default.get_config()
        if self.rules:
            return {**config, "rules": [{"match": p, **c.get_config()} for p, c in self.rules]}
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> CodecPlan:
        config = dict(config)
        rules = tuple((r.pop("match"), _from_config(r)) for r in map(dict, config.pop("rules", [])))
        return cls(_from_config(config), rules)

    @classmethod
    def parse(cls, default: str = "lossless", rules: list[str] | tuple[str, ...] = ()) -> CodecPlan:
        """``default`` is a codec spec; each rule is ``PATTERN=SPEC`` with a glob pattern."""
        parsed = []
        for rule in rules:
            pattern, eq, spec = rule.partition("=")
            if not eq or not pattern or not spec:
                raise CodecError(f"bad codec rule {rule!r}: expected PATTERN=CODEC, e.g. '*norm*=lossless'")
            parsed.append((pattern, parse_plan_codec(spec)))
        return cls(parse_plan_codec(default), tuple(parsed))


def _matches(name: str, pattern: str) -> bool:
    return fnmatch.fnmatchcase(name.lower(), pattern.lower())


def _from_config(config: dict[str, Any]) -> PlanCodec:
    if config.get("id") == "auto":
        return AutoCodec.from_params({k: v for k, v in config.items() if k != "id"})
    return get_codec(config)

"""Which codec each tensor gets: a default plus name-pattern rules (first match wins).

Lets a user keep embeddings and norms lossless while quantizing the rest; the
plan's config is stored with the vector, the chosen codec with each tensor.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Any

import torch

from tvstore.codecs.base import Codec, get_codec
from tvstore.codecs.lossless import Lossless
from tvstore.codecs.spec import parse_codec_spec
from tvstore.errors import CodecError
from tvstore.tensors.metrics import ErrorStats


@dataclass(frozen=True)
class AutoCodec:
    """``--codec auto``: per tensor, the smallest codec whose relative L2 error is at most ``max_error``.

    Not a codec itself (it writes no format of its own); the codec it picks is
    recorded with each tensor.
    """

    max_error: float = 0.1

    def __post_init__(self) -> None:
        if not 0 <= self.max_error:
            raise CodecError(f"auto: max_error must be a non-negative number, got {self.max_error!r}")

    def choose(self, tau: torch.Tensor) -> tuple[Codec, bytes, ErrorStats]:
        from tvstore.tensors.auto_codec import choose_codec

        return choose_codec(tau, max_error=self.max_error)

    def get_config(self) -> dict[str, Any]:
        return {"id": "auto", "max_error": self.max_error}


def parse_plan_codec(spec: str) -> Codec | AutoCodec:
    """A codec spec, or ``auto[:max_error=E]``."""
    codec_id, _, rest = spec.strip().partition(":")
    if codec_id != "auto":
        return parse_codec_spec(spec)
    params = dict(p.split("=", 1) for p in rest.split(",") if "=" in p)
    unknown = set(params) - {"max_error"}
    if unknown or (rest and not params):
        raise CodecError(f"bad auto spec {spec!r}: the only parameter is max_error, e.g. auto:max_error=0.1")
    try:
        return AutoCodec(float(params.get("max_error", 0.1)))
    except ValueError:
        raise CodecError(f"bad auto spec {spec!r}: max_error must be a number") from None


PlanCodec = Codec | AutoCodec


@dataclass(frozen=True)
class CodecPlan:
    default: PlanCodec = field(default_factory=Lossless)
    rules: tuple[tuple[str, PlanCodec], ...] = ()

    def codec_for(self, name: str) -> PlanCodec:
        for pattern, codec in self.rules:
            if fnmatch.fnmatchcase(name, pattern):
                return codec
        return self.default

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


def _from_config(config: dict[str, Any]) -> PlanCodec:
    if config.get("id") == "auto":
        return AutoCodec(float(config.get("max_error", 0.1)))
    return get_codec(config)

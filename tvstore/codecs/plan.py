"""Which codec each tensor gets: a default plus name-pattern rules (first match wins).

Lets a user keep embeddings and norms lossless while quantizing the rest; the
plan's config is stored with the vector, the chosen codec with each tensor.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Any

from tvstore.codecs.base import Codec, get_codec
from tvstore.codecs.lossless import Lossless
from tvstore.codecs.spec import parse_codec_spec
from tvstore.errors import CodecError


@dataclass(frozen=True)
class CodecPlan:
    default: Codec = field(default_factory=Lossless)
    rules: tuple[tuple[str, Codec], ...] = ()

    def codec_for(self, name: str) -> Codec:
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
        rules = tuple((r.pop("match"), get_codec(r)) for r in map(dict, config.pop("rules", [])))
        return cls(get_codec(config), rules)

    @classmethod
    def parse(cls, default: str = "lossless", rules: list[str] | tuple[str, ...] = ()) -> CodecPlan:
        """``default`` is a codec spec; each rule is ``PATTERN=SPEC`` with a glob pattern."""
        parsed = []
        for rule in rules:
            pattern, eq, spec = rule.partition("=")
            if not eq or not pattern or not spec:
                raise CodecError(f"bad codec rule {rule!r}: expected PATTERN=CODEC, e.g. '*norm*=lossless'")
            parsed.append((pattern, parse_codec_spec(spec)))
        return cls(parse_codec_spec(default), tuple(parsed))

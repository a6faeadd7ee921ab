"""The one interface every codec implements, and the registry by codec id.

A codec turns one tensor into one blob and back. Codecs are frozen
dataclasses whose fields are their parameters, so a codec is fully described
by its config ``{"id": codec_id, **params}``; that config is stored next to
every component and is all a reader needs to decode the blob forever after
(numcodecs' ``get_config``/``from_config``, zarr's frozen codec dataclasses).

Numeric fields declare their range with :func:`param`; the base class checks
every declared range on construction, so no codec can be built with a NaN,
an infinity or an out-of-range parameter, whoever builds it.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar, TypeVar

import torch

from tvstore.errors import CodecError
from tvstore.util.bounds import Bounds

Shape = tuple[int, ...]

_REGISTRY: dict[str, type[Codec]] = {}

C = TypeVar("C", bound="type[Codec]")


def param(default: Any, bounds: Bounds, *, optional: bool = False) -> Any:
    """A codec field whose value must lie in ``bounds`` (``None`` too when ``optional``)."""
    return dataclasses.field(default=default, metadata={"bounds": bounds, "optional": optional})


@dataclasses.dataclass(frozen=True)
class Codec(ABC):
    """Encode one tensor to bytes and decode it back.

    ``exact`` codecs promise ``decode(encode(x))`` is bit-identical to ``x``;
    lossy ones promise a bounded error (each documents its bound).
    """

    codec_id: ClassVar[str]
    exact: ClassVar[bool] = False
    #: decode may return a tensor over the payload's own memory (``raw`` does, to save a copy); a codec
    #: that always decodes into new memory says ``False``, so a rebuild may pass it a read-only mapping
    #: of the blob file instead of a copy (:meth:`tvstore.blobs.base.BlobStore.view`)
    keeps_payload: ClassVar[bool] = True

    def __post_init__(self) -> None:
        """Check every declared range, then the codec's own rules (:meth:`validate`)."""
        for f in dataclasses.fields(self):
            bounds, value = f.metadata.get("bounds"), getattr(self, f.name)
            if bounds is not None and not (value is None and f.metadata["optional"]):
                bounds.check(f.name, value)
        self.validate()

    def validate(self) -> None:
        """Checks beyond numeric ranges (choices, combinations); raise ``ValueError``."""

    def check_shapes(self, shapes: Sequence[Shape]) -> None:
        """Before a push encodes anything: ``ValueError`` if these tensor shapes make the parameters useless."""

    @abstractmethod
    def encode(self, tensor: torch.Tensor) -> bytes:
        """Bytes for ``tensor`` (any shape; float dtypes unless the codec says otherwise)."""

    @abstractmethod
    def decode(self, data: bytes, shape: Shape, dtype: torch.dtype) -> torch.Tensor:
        """The tensor of ``shape`` and ``dtype`` encoded in ``data``."""

    def decode_into(self, data: bytes, out: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """``out.copy_(decode(data, out.shape, dtype))``: what a merge fills its fp32 input buffer with.

        Never keeps ``data`` (so it may be a mapping dropped after the call).
        Codecs override it to write ``out`` directly, without the decoded tensor in between.
        """
        return out.copy_(self.decode(data, tuple(out.shape), dtype))

    def get_config(self) -> dict[str, Any]:
        return {"id": self.codec_id, **dataclasses.asdict(self)}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Codec:
        params = {k: v for k, v in config.items() if k != "id"}
        check_param_names(cls.codec_id, params, {f.name for f in dataclasses.fields(cls)})
        try:
            return cls(**params)
        except (TypeError, ValueError) as exc:
            raise CodecError(f"codec {cls.codec_id!r}: {exc}") from None


def check_param_names(codec_id: str, params: dict[str, Any], names: set[str]) -> None:
    """``CodecError`` naming the first parameter of ``params`` that ``codec_id`` does not have."""
    unknown = sorted(set(params) - names)
    if unknown:
        raise CodecError(
            f"codec {codec_id!r} has no parameter {unknown[0]!r} (parameters: {', '.join(sorted(names)) or 'none'})"
        )


def register_codec(cls: C) -> C:
    """Class decorator: make a codec available by its ``codec_id``."""
    if cls.__post_init__ is not Codec.__post_init__:
        raise TypeError(f"codec {cls.codec_id!r} overrides __post_init__: put its checks in validate(), "
                        f"so the declared parameter ranges are still checked")
    if cls.codec_id in _REGISTRY and _REGISTRY[cls.codec_id] is not cls:
        raise ValueError(f"codec id {cls.codec_id!r} registered twice")
    _REGISTRY[cls.codec_id] = cls
    return cls


def codec_ids() -> list[str]:
    return sorted(_REGISTRY)


def codec_class(codec_id: str, also: tuple[str, ...] = ()) -> type[Codec]:
    """The codec registered as ``codec_id``; the error lists the known ids plus ``also``
    (spec grammars above this layer, such as ``auto``, name theirs)."""
    try:
        return _REGISTRY[codec_id]
    except KeyError:
        known = ", ".join(sorted([*codec_ids(), *also]))
        raise CodecError(f"unknown codec {codec_id!r} (known: {known})") from None


def get_codec(config: dict[str, Any]) -> Codec:
    """Rebuild a codec from its stored config."""
    if "id" not in config:
        raise CodecError(f"codec config has no 'id': {config!r}")
    return codec_class(config["id"]).from_config(config)

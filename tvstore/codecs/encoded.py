"""What codecs and group packers produce: a component whose bytes are not stored yet.

It lives beside the codecs (not in the per-tensor layer that stores and reads
components) so that group codecs such as RTVQ, TALL and EMR can build
components without importing the layer above them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Component kinds. ``add`` terms sum to tau. ``fix`` terms set entries exactly on rebuild.
# An ``xor`` term holds the fine-tune's bits XOR the base's (an integer tensor of the same width):
# the rebuild is one XOR, exact by construction, and tau = (base ^ x) - base needs the base.
ADD, FIX, XOR = "add", "fix", "xor"
KINDS = (ADD, FIX, XOR)


@dataclass
class EncodedComponent:
    """A component before its bytes are stored: what codecs and packers produce."""

    codec: dict[str, Any]
    payload: bytes
    scale: float = 1.0
    mask: bytes | None = None
    kind: str = ADD
    extra: dict[str, Any] = field(default_factory=dict)

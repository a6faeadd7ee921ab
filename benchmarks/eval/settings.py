"""What the harness measures: the codec settings and merge methods, in one place.

Adding a codec setting or a merge method to the tables means adding one line
here.  A setting whose codec (or method) fails stops the run with its error:
a table never hides a failure as a blank cell.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from benchmarks.eval.data import Sizes
from benchmarks.eval.finetune import FinetuneSettings

FP32 = "lossless"


@dataclass(frozen=True)
class CodecSetting:
    """One way to store every task vector.

    ``spec`` is a registry codec spec (``quant:bits=4``) pushed per vector,
    or, with ``group=True``, a ``Registry.pack`` spec (``rtvq:base_bits=3,offset_bits=2``)
    applied to the lossless vectors of all tasks at once: the shared part is
    stored once for the group, and each task's new version is rebuilt with
    ``pull_checkpoint`` like any other.
    """

    spec: str
    group: bool = False

    @property
    def family(self) -> str:
        return self.spec.partition(":")[0]


@dataclass(frozen=True)
class MergeSetting:
    """One merge method.

    ``kind="recipe"``: a tvstore merge recipe method (``task_arithmetic``,
    ``ties``, ``consensus``) run by ``Registry.merge``: one multi-task encoder.
    ``kind="pack"``: a per-task reconstruction from ``Registry.pack`` (TALL
    masks, EMR) rebuilt with ``pull_checkpoint``, scored task by task.
    ``kind="per_task"``: the recipe saved with ``extra_tensors: drop`` and
    pulled with ``Registry.pull_per_task``: each task scored from its own
    folder (the merged encoder with that task's head).
    ``grid``: scaling coefficients tried on the validation split (the best is
    kept, as the papers do); ``lambda_from``: reuse the coefficient another
    method picked for the same vectors.
    """

    label: str
    kind: str
    method: str
    params: dict[str, Any] = field(default_factory=dict)
    grid: tuple[float, ...] = ()
    lambda_from: str | None = None


CODECS: tuple[CodecSetting, ...] = (
    CodecSetting(FP32),
    CodecSetting("quant:bits=8"),
    CodecSetting("quant:bits=4"),
    CodecSetting("quant:bits=3"),
    CodecSetting("quant:bits=2"),
    CodecSetting("rtvq:base_bits=3,offset_bits=2", group=True),  # fixed B3O2, as published
    CodecSetting("rtvq:bits=1.0", group=True),  # a budget: 1 bit/param/task, allocated per tensor
    CodecSetting("sparse:density=0.1"),
    CodecSetting("sparse:density=0.03"),
    CodecSetting("dare:p=0.9"),
    CodecSetting("ternary:density=0.1"),
    CodecSetting("ternary:density=0.03"),
    CodecSetting("lowrank:rank=16"),
    # issue 11: error-optimal ranges, least-squares sign codes, Delta-CoMe SVD, the cross-codec allocator
    CodecSetting("quant:bits=2,granularity=group,clip=mse"),
    CodecSetting("sign:density=0.1"),
    CodecSetting("sign:density=0.05"),
    CodecSetting("sign:density=0.02"),
    CodecSetting("svdmix:rank=16,top=4"),
    CodecSetting("rtvq:bits=1.0,clip=mse", group=True),
    CodecSetting("mixed:bits=0.5", group=True),
)

MERGES: tuple[MergeSetting, ...] = (
    # the previous grid (0.3..1.0) picked its bottom value, so it now starts lower
    MergeSetting("task_arithmetic", "recipe", "task_arithmetic", grid=(0.1, 0.2, 0.3, 0.5)),
    MergeSetting("ties", "recipe", "ties", params={"density": 0.2}, grid=(1.0,)),
    MergeSetting("consensus", "recipe", "consensus", params={"k": 2}, lambda_from="task_arithmetic"),
    MergeSetting("tall_mask", "pack", "tall", params={"lambda": 0.4}),
    MergeSetting("emr", "pack", "emr"),
    MergeSetting("task_arithmetic_per_task", "per_task", "task_arithmetic", lambda_from="task_arithmetic"),
)

#: LoRA exports of each lossless vector (``Registry.to_lora``), one row per rank
LORA_RANKS: tuple[int, ...] = (8, 16, 64)

#: merges are built from fp32 vectors and, per codec family, from its smallest-footprint setting;
#: two families keep the full run under 20 minutes on 2 cores (add more here, ~4 min each)
MERGE_FAMILIES: tuple[str, ...] = ("ternary", "rtvq")

#: published operating points marked on the plot (bits per parameter)
PUBLISHED_POINTS: tuple[tuple[str, float], ...] = (
    ("TVQ INT4", 4.0),
    ("RTVQ B3O2, 8 tasks", 2.0 + 3.0 / 8),
)
#: published ranges (bits per parameter): ComPEFT reports 8x-50x smaller than fp32
PUBLISHED_SPANS: tuple[tuple[str, float, float], ...] = (("ComPEFT 8-50x", 32.0 / 50, 32.0 / 8),)


@dataclass(frozen=True)
class HarnessSettings:
    """A whole run: tasks, fine-tune schedule, evaluation length, what to measure."""

    tasks: tuple[str, ...] = ("bbc", "tweets", "drugs")
    finetune: FinetuneSettings = FinetuneSettings()  # its max lengths are the evaluation's too
    codecs: tuple[CodecSetting, ...] = CODECS
    merges: tuple[MergeSetting, ...] = MERGES
    merge_families: tuple[str, ...] = MERGE_FAMILIES
    lora_ranks: tuple[int, ...] = LORA_RANKS


def quick_settings() -> HarnessSettings:
    """A seconds-long run (the test mode): tiny splits, a few steps, five codec settings, every merge method."""
    sizes = Sizes(train=48, val=16, test=24)
    finetune = FinetuneSettings(steps=4, batch_size=8, max_length=32, warmup_steps=1, sizes=sizes, max_lengths=())
    keep = (FP32, "quant:bits=4", "rtvq:base_bits=3,offset_bits=2", "ternary:density=0.1")
    # the tiny model's headers alone cost ~2 bits/param/task, so its bit-budget row asks for 2.5, not 1
    codecs = tuple(c for c in CODECS if c.spec in keep) + (CodecSetting("rtvq:bits=2.5", group=True),)
    merges = tuple(
        MergeSetting(m.label, m.kind, m.method, m.params, grid=(0.2, 0.5) if len(m.grid) > 1 else m.grid, lambda_from=m.lambda_from)
        for m in MERGES
    )
    # merges from lossless (pushed) and RTVQ (packed) cover both ways vectors are stored
    return HarnessSettings(finetune=finetune, codecs=codecs, merges=merges, merge_families=("rtvq",))

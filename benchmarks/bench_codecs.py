"""Codec benchmark on real fine-tune deltas: size, error and speed of every codec setting.

Deltas are tau = theta_ft - theta_base of the three cached all-MiniLM-L6-v2
fine-tunes from :mod:`benchmarks.eval.finetune` (trained on first use), over
the base's tensor names (the classifier head is not part of the base, so it
is not a delta). Everything runs on one thread, so MB/s are per core.

Per setting: bytes per parameter, ratio vs fp32, relative L2 error and cosine
over the whole vector (aggregated exactly, see :class:`tvstore.tensors.metrics.ErrorStats`),
encode and decode MB/s of fp32 data (decode: best of three runs per tensor,
the same for every row, because the benchmark box is shared). The lossless row is shown next to plain
zstd and ZipNN on the same fp32 bytes. Group packers (RTVQ, TALL, EMR) store
the three tasks together; their bytes are the shared parts once plus each
task's own parts, divided by three.

    python benchmarks/bench_codecs.py            # writes benchmarks/results/codecs.{json,png}
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import zstandard

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.eval.finetune import base_model_dir, finetuned_checkpoints  # noqa: E402
from benchmarks.eval.model import read_tensors  # noqa: E402
from tvstore.codecs import format_codec_spec, get_codec, parse_codec_spec  # noqa: E402
from tvstore.codecs.base import Codec  # noqa: E402
from tvstore.codecs.emr import emr_pack  # noqa: E402
from tvstore.codecs.masks import decode_mask  # noqa: E402
from tvstore.codecs.rtvq import rtvq_pack  # noqa: E402
from tvstore.codecs.tall import tall_pack  # noqa: E402
from tvstore.codecs.encoded import EncodedComponent  # noqa: E402
from tvstore.tensors.metrics import ErrorStats  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"

SETTINGS = [
    "lossless",
    "quant:bits=8", "quant:bits=4", "quant:bits=3", "quant:bits=2",
    "quant:bits=8,granularity=channel", "quant:bits=4,granularity=channel",
    "quant:bits=4,granularity=group,group_size=128", "quant:bits=3,granularity=group,group_size=128",
    "quant:bits=2,granularity=group,group_size=128",
    "sparse:density=0.01", "sparse:density=0.05", "sparse:density=0.1", "sparse:density=0.25",
    "sparse:density=0.5", "sparse:density=0.6",
    "sparse:density=0.1,values=bf16", "sparse:density=0.1,values=fp32",
    "dare:p=0.9", "dare:p=0.5", "dare:p=0.1", "dare:p=0.05",
    "ternary:density=0.05", "ternary:density=0.1", "ternary:density=0.2", "ternary:density=0.3",
    "ternary:density=0.5", "ternary:density=1.0",
    "lowrank:rank=8", "lowrank:rank=32", "lowrank:rank=128", "lowrank:rank=null,energy=0.9",
    "lowrank:rank=null,energy=0.95",
]
GROUPS: dict[str, Callable[[list[torch.Tensor]], list[list[EncodedComponent]]]] = {
    "rtvq:B3O2": lambda taus: rtvq_pack(taus, 3, 2),
    "rtvq:B4O2,group": lambda taus: rtvq_pack(taus, 4, 2, "group", 128),
    "rtvq:B4O3": lambda taus: rtvq_pack(taus, 4, 3),
    "rtvq:B4O3,group": lambda taus: rtvq_pack(taus, 4, 3, "group", 128),
    "rtvq:B8O4": lambda taus: rtvq_pack(taus, 8, 4),
    "tall:lambda=0.4": lambda taus: tall_pack(taus, 0.4),
    "tall:lambda=0.4,quant8": lambda taus: tall_pack(taus, 0.4, parse_codec_spec("quant:bits=8,granularity=channel")),
    "tall:lambda=0.2": lambda taus: tall_pack(taus, 0.2),
    "emr": lambda taus: emr_pack(taus),
}


@dataclass
class Row:
    setting: str
    params: int = 0
    stored: int = 0
    enc_s: float = 0.0
    dec_s: float = 0.0
    error: ErrorStats = field(default_factory=ErrorStats)

    def summary(self) -> dict[str, float | str]:
        raw = 4 * self.params
        return {
            "setting": self.setting,
            "bytes_per_param": self.stored / self.params,
            "ratio_vs_fp32": raw / self.stored,
            "rel_l2": self.error.rel_l2,
            "cosine": self.error.cosine,
            "encode_MBps": raw / self.enc_s / 1e6 if self.enc_s else float("nan"),
            "decode_MBps": raw / self.dec_s / 1e6 if self.dec_s else float("nan"),
        }


def load_deltas() -> dict[str, dict[str, torch.Tensor]]:
    """task -> tensor name -> fp32 delta (float tensors of the base only)."""
    base = read_tensors(base_model_dir())
    out = {}
    for task, path in finetuned_checkpoints().items():
        ft = read_tensors(path)
        out[task] = {n: (ft[n].float() - b.float()) for n, b in base.items() if b.is_floating_point()}
    return out


def timed(fn: Callable[[], object], repeat: int = 1) -> tuple[object, float]:
    """(result, best wall time of ``repeat`` runs): the best run is the least disturbed by other load."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        value = fn()
        best = min(best, time.perf_counter() - start)
    return value, best


DECODE_REPEAT = 3  # decodes are cheap: take the best of three


def bench_codec(codec: Codec, deltas: dict[str, dict[str, torch.Tensor]]) -> Row:
    row = Row(format_codec_spec(codec))
    for tensors in deltas.values():
        for tau in tensors.values():
            payload, t_enc = timed(lambda: codec.encode(tau))
            approx, t_dec = timed(lambda: codec.decode(payload, tuple(tau.shape), tau.dtype), DECODE_REPEAT)
            row.params += tau.numel()
            row.stored += len(payload)
            row.enc_s += t_enc
            row.dec_s += t_dec
            row.error += ErrorStats.of(tau, approx)
    return row


def decode_component(comp: EncodedComponent, like: torch.Tensor) -> torch.Tensor:
    value = get_codec(comp.codec).decode(comp.payload, tuple(like.shape), like.dtype)
    if comp.mask is not None:
        value = torch.where(decode_mask(comp.mask, tuple(like.shape)), value, 0.0)
    return value * comp.scale if comp.scale != 1.0 else value


def bench_group(name: str, pack: Callable, deltas: dict[str, dict[str, torch.Tensor]]) -> Row:
    row = Row(name)
    tasks = list(deltas)
    for tname in deltas[tasks[0]]:
        taus = [deltas[t][tname] for t in tasks]
        packed, t_enc = timed(lambda: pack(taus))
        blobs = {c.payload for comps in packed for c in comps} | {c.mask for comps in packed for c in comps if c.mask}
        row.stored += sum(len(b) for b in blobs)
        row.params += taus[0].numel() * len(taus)
        row.enc_s += t_enc
        for tau, comps in zip(taus, packed, strict=True):
            approx, t_dec = timed(lambda: sum(decode_component(c, tau) for c in comps), DECODE_REPEAT)
            row.dec_s += t_dec
            row.error += ErrorStats.of(tau, approx)
    return row


def bench_reference(name: str, deltas: dict[str, dict[str, torch.Tensor]]) -> Row:
    """Plain zstd (level 3) or ZipNN (one thread) over each fp32 delta's bytes."""
    row = Row(name)
    if name == "zipnn":
        from zipnn import ZipNN

        # ZipNN 0.5.4 reorders the input's bytes in place: hand it a copy (the copy is timed too)
        zpn = ZipNN(input_format="torch", bytearray_dtype="float32", threads=1)
        compress = lambda t: zpn.compress(t.clone())  # noqa: E731
        decompress = zpn.decompress
    else:
        cctx, dctx = zstandard.ZstdCompressor(level=3), zstandard.ZstdDecompressor()
        compress = lambda t: cctx.compress(t.numpy().tobytes())  # noqa: E731
        decompress = dctx.decompress
    for tensors in deltas.values():
        for tau in tensors.values():
            blob, t_enc = timed(lambda: compress(tau.contiguous()))
            back, t_dec = timed(lambda: decompress(blob), DECODE_REPEAT)
            raw = back.numpy().tobytes() if isinstance(back, torch.Tensor) else bytes(back)
            assert raw == tau.numpy().tobytes(), f"{name} did not round-trip"
            row.params += tau.numel()
            row.stored += len(blob)
            row.enc_s += t_enc
            row.dec_s += t_dec
    return row


def print_table(rows: list[dict]) -> None:
    head = f"{'setting':48} {'B/param':>8} {'ratio':>7} {'relL2':>7} {'cosine':>7} {'enc MB/s':>9} {'dec MB/s':>9}"
    print(head)
    print("-" * len(head))
    for r in rows:
        print(
            f"{r['setting']:48} {r['bytes_per_param']:8.4f} {r['ratio_vs_fp32']:7.2f} {r['rel_l2']:7.4f} "
            f"{r['cosine']:7.4f} {r['encode_MBps']:9.1f} {r['decode_MBps']:9.1f}"
        )


def smallest_under(rows: list[dict], bound: float = 0.3) -> dict[str, dict]:
    """Per codec family, the smallest setting whose relative L2 stays below ``bound``."""
    best: dict[str, dict] = {}
    for r in rows:
        family = r["setting"].split(":")[0]
        if r["rel_l2"] < bound and (family not in best or r["bytes_per_param"] < best[family]["bytes_per_param"]):
            best[family] = r
    return best


def short_label(setting: str) -> str:
    """The setting without its default-valued parameters, for the plot."""
    for noise in (",energy=null", ",factors=fp32", ",fallback=lossless", ",group_size=128", "granularity=",
                  ",values=fp16", ",seed=0", ",alpha=1.0", "level=3", "density="):
        setting = setting.replace(noise, "")
    return setting.rstrip(":")


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    families = list(dict.fromkeys(r["setting"].split(":")[0] for r in rows))
    colors = dict(zip(families, plt.get_cmap("tab20").colors, strict=False))
    fig, ax = plt.subplots(figsize=(10, 7))
    for family in families:
        mine = [r for r in rows if r["setting"].split(":")[0] == family]
        xs = [r["bytes_per_param"] for r in mine]
        ys = [max(r["rel_l2"], 1e-4) for r in mine]
        ax.scatter(xs, ys, label=family, s=28, color=colors[family])
        for r, x, y in zip(mine, xs, ys, strict=True):
            ax.annotate(short_label(r["setting"]), (x, y), fontsize=6, xytext=(3, 2), textcoords="offset points")
    ax.legend(fontsize=8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.axhline(0.3, color="grey", lw=0.6, ls="--")
    ax.set_xlabel("stored bytes per parameter (fp32 = 4)")
    ax.set_ylabel("relative L2 error (exact codecs drawn at 1e-4)")
    ax.set_title("tvstore codecs on all-MiniLM-L6-v2 fine-tune deltas (3 tasks)")
    fig.tight_layout()
    fig.savefig(path, dpi=130)


def main() -> None:
    import machine  # this folder is on sys.path when run as a script

    before = machine.snapshot(settle=True)
    torch.set_num_threads(1)
    deltas = load_deltas()
    rows = [bench_reference("zstd-3 (fp32 bytes)", deltas).summary(), bench_reference("zipnn", deltas).summary()]
    rows += [bench_codec(parse_codec_spec(spec), deltas).summary() for spec in SETTINGS]
    rows += [bench_group(name, pack, deltas).summary() for name, pack in GROUPS.items()]
    print_table(rows)
    best = smallest_under(rows)
    print("\nsmallest footprint with relative L2 < 0.3:")
    for family, r in best.items():
        print(f"  {family:10} {r['setting']:48} {r['bytes_per_param']:.4f} B/param  ({r['ratio_vs_fp32']:.1f}x)  relL2 {r['rel_l2']:.3f}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    params = sum(t.numel() for t in next(iter(deltas.values())).values())
    meta = {"model": "all-MiniLM-L6-v2", "tasks": list(deltas), "params_per_task": params, "threads": 1,
            "machine": machine.finish(before), "command": "python " + " ".join(sys.argv)}
    (RESULTS / "codecs.json").write_text(json.dumps({"meta": meta, "rows": rows, "smallest_under_0.3": best}, indent=1))
    plot(rows, RESULTS / "codecs.png")
    print(f"\nwrote {RESULTS / 'codecs.json'} and {RESULTS / 'codecs.png'}")


if __name__ == "__main__":
    main()

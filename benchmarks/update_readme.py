"""Copy the README's performance figures from ``benchmarks/results/*.json`` (run by ``make bench``).

The README's measured paragraphs sit between ``<!-- bench:begin -->`` and
``<!-- bench:end -->``; this script rewrites that block from the result files
so no figure is typed by hand. A result file that does not exist yet leaves
its paragraph out, with a note naming the command that makes it.

    python benchmarks/update_readme.py            # rewrites README.md in place
    python benchmarks/update_readme.py --check    # exit 1 if README.md is out of date
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"


def load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def span(values: list[float], fmt: str = "{:.2f}", unit: str = "") -> str:
    """``a-b`` (or one value) over ``values``, formatted."""
    lo, hi = min(values), max(values)
    a, b = fmt.format(lo), fmt.format(hi)
    return f"{a}{unit}" if a == b else f"{a}-{b}{unit}"


def load_text(m: dict) -> str:
    memory = m.get("memory", {}).get("fresh_gbps")  # runs before the probe existed recorded none
    cpu = f" ({m['cpu']})" if m.get("cpu") else ""  # the machine changes between sessions: name it
    return (f"{m['cores']} cores{cpu}, load average {m['load_before'][0]:.1f} before and {m['load_after'][0]:.1f} after"
            + (f", fresh memory filled at {memory:.2f} GB/s" if memory else "") + f", commit {m['commit'].split()[0]}")


def rebuild_paragraph(r: dict) -> str:
    def ratios(what: str, cache: str) -> list[float]:
        return [x["ratio"] for x in r["pull"] if x["what"].startswith(what) and x["cache"] == cache]

    mem = [x for x in r["rebuild"]]
    one = [x for x in mem if x["workers"] == 1]
    two = [x for x in mem if x["workers"] == 2]
    push = {p["codec"]: p for p in r["push"]}
    text = (f"**Rebuild** (`make bench`: `benchmarks/bench_rebuild.py`, {r['model']}; base + 3 fine-tunes whose "
            f"deltas are low-rank plus noise; pairs alternated, median of {r['repeat']}; {load_text(r['machine'])}): "
            f"`tvstore pull --checkpoint` as a whole CLI process (start-up and imports included) takes "
            f"{span(ratios('pull --checkpoint', 'warm'))}x the time of `cp -r` of the full checkpoint with a warm page "
            f"cache and {span(ratios('pull --checkpoint', 'cold'))}x cold (lossless, quant 4-bit, ternary, RTVQ); "
            f"in-process, after imports and a full garbage collection (on both sides), `pull_checkpoint` takes {span(ratios('pull_checkpoint', 'warm'))}x "
            f"`shutil.copytree`. A rebuild into memory (`Registry.rebuild`, every tensor read) takes "
            f"{span([x['ratio'] for x in two])}x `safetensors.torch.load_file` + reading every tensor on 2 threads"
            + (f" ({span([x['ratio'] for x in one])}x on one)" if one else "") +
            f"; output {span([x['out_gb_s'] for x in one])} GB/s on one thread, "
            f"{span([x['out_gb_s'] for x in two if x['codec'] == 'lossless'])} GB/s on two (lossless)"
            + (f", peak memory {span([x['x_largest'] for x in mem if 'x_largest' in x], '{:.1f}')}x the largest "
               f"tensor" if any("x_largest" in x for x in mem) else "") + ". ")
    if r.get("profile"):
        text += profile_sentence(r["profile"])
    if push:
        text += "First push (into a registry holding only the base): " + "; ".join(
            f"{c} {p['mb_s_per_core']:.0f} MB/s of bf16 input per core, peak memory {p['x_largest']:.1f}x the largest "
            f"tensor" for c, p in push.items()) + ". "
    if r.get("push_profile"):
        text += ("Where a one-thread push's time goes (cProfile): "
                 + "; ".join(f"{x['codec']}: {largest_parts(x['parts'])}" for x in r["push_profile"]) + ". ")
    if r.get("zipnn"):
        ours, *peers, info = r["zipnn"]
        text += (f"Lossless on the same fine-tune ({info['raw_mib']:.0f} MiB, one core): {ours['tool']} ratio "
                 f"{ours['ratio']:.3f}, decode {ours['decode_mb_s']:.0f} MB/s; " + "; ".join(
                     f"{p['tool']} {p['ratio']:.3f}, {p['decode_mb_s']:.0f} MB/s" for p in peers) + ". ")
    return text + "Table: `benchmarks/results/rebuild.md`."


def largest_parts(parts: dict[str, float], count: int = 3) -> str:
    """The ``count`` largest parts of a profile, as shares of its total."""
    total = sum(parts.values())
    ranked = sorted(parts.items(), key=lambda kv: -kv[1])[:count]
    return ", ".join(f"{name} {value / total:.0%}" for name, value in ranked)


def profile_sentence(profile: dict) -> str:
    """The three largest parts of each profiled one-thread rebuild, and the CLI's start-up."""
    return ("Where a one-thread rebuild's time goes (cProfile): "
            + "; ".join(f"{r['codec']}: {largest_parts(r['parts'])}" for r in profile["rebuilds"])
            + f". Starting the interpreter and importing the pull path alone takes {profile['startup']['seconds']:.2f} s. ")


def scale_paragraph(s: dict, small: dict | None) -> str:
    """The 1.2B rows; their ratio to the 168M table only when both ran on the same code (else the README
    would divide a time of one run by a time of another)."""

    def wall(res: dict, what: str) -> float:
        return next(x["tv_s"] for x in res["pull"] if x["what"].startswith(what) and x["cache"] == "warm")

    def by_codec(rows: list[dict], fmt: Callable[[dict], str]) -> str:
        return ", ".join(f"{x['codec']} {fmt(x)}" for x in rows)

    text = f"**Scale** (`make bench-scale`, {s['model']}; {load_text(s['machine'])}): "
    parts = []
    if small and small["machine"]["commit"] != s["machine"]["commit"]:
        parts.append(f"not compared with the table above, which was measured at another commit "
                     f"({small['machine']['commit']})")
    elif small:
        factor = s["params"] / small["params"]
        parts.append(f"{factor:.1f}x the parameters of the table above; in-process `pull_checkpoint` "
                     f"{wall(s, 'pull_checkpoint'):.1f} s vs {wall(small, 'pull_checkpoint'):.2f} s "
                     f"({wall(s, 'pull_checkpoint') / wall(small, 'pull_checkpoint'):.1f}x)")
    for what, label in (("pull --checkpoint", "`tvstore pull --checkpoint` (CLI process) vs `cp -r`"),
                        ("pull_checkpoint", "in-process `pull_checkpoint` vs `copytree`")):
        for cache in ("warm", "cold"):
            rows = [x for x in s["pull"] if x["what"].startswith(what) and x["cache"] == cache]
            if rows:
                parts.append(f"{label}, {cache}: " + by_codec(rows, lambda x: f"{x['ratio']:.2f}x"))
    parts.append("rebuild into memory on 2 threads: " + by_codec(
        s["rebuild"], lambda x: f"{x['out_gb_s']:.2f} GB/s at {x['x_largest']:.1f}x the largest tensor"))
    parts.append("first push: " + by_codec(
        s["push"], lambda x: f"{x['mb_s_per_core']:.0f} MB/s per core at {x['x_largest']:.1f}x the largest tensor"))
    return text + "; ".join(parts) + ". Table: `benchmarks/results/rebuild_scale.md`."


def apart(r: dict) -> str:
    """Whether an A/B row's two sides' wall times ranked apart: a ratio inside overlapping ranges ranks nothing."""
    (b_lo, b_hi), (a_lo, a_hi) = r["before_wall_range"], r["after_wall_range"]
    return "runs apart" if a_hi < b_lo or b_hi < a_lo else "runs overlap"


def ab_paragraph(ab: dict, scale: dict | None) -> str:
    """The last read-path change, measured against the commit before it in one alternated run."""
    def rows(res: dict) -> str:
        return ", ".join(f"{r['codec']} on {r['workers']} thread{'s' if r['workers'] > 1 else ''} "
                         f"{r['before_wall_s']:.2f} -> {r['after_wall_s']:.2f} s ({r['ratio_wall_s']:.2f}x, {apart(r)}; "
                         f"CPU sys {r['before_cpu_sys_s']:.2f} -> {r['after_cpu_sys_s']:.2f} s, peak memory "
                         f"{r['before_peak_anon_mib']:.0f} -> {r['after_peak_anon_mib']:.0f} MiB)" for r in res["rows"])

    text = (f"**Before and after** (`make bench-ab BEFORE={ab['before']}`: `benchmarks/ab_rebuild.py`, the rebuild "
            f"into memory of tvstore at {ab['before']} and at {ab['after']}, after a warm-up child each, alternated "
            f"{ab['repeat']} times in one run, medians; {load_text(ab['machine'])}): {ab['model']}: {rows(ab)}")
    if scale is not None and (scale["before"], scale["after"]) == (ab["before"], ab["after"]):
        text += f"; {scale['model']}: {rows(scale)}"
    elif scale is not None:
        text += f"; the 1.2B table compares other commits ({scale['before']} and {scale['after']}) and is not quoted"
    return text + ". Tables: `benchmarks/results/ab_rebuild.md`" + (", `ab_rebuild_scale.md`" if scale else "") + "."


def ab_cli_paragraph(ab: dict) -> str:
    """The last change to a command's start-up or exit: whole CLI pulls of two commits, alternated in one run."""
    rows = ", ".join(f"{r['codec']} {r['before_wall_s']:.2f} -> {r['after_wall_s']:.2f} s ({r['ratio_wall_s']:.2f}x, "
                     f"{apart(r)})" for r in ab["rows"])
    return (f"**Before and after, whole CLI processes** (`make bench-ab BEFORE={ab['before']}`: `benchmarks/ab_rebuild.py "
            f"--cli`, `tvstore pull --checkpoint` of tvstore and its CLI at {ab['before']} and at {ab['after']}, warm "
            f"page cache, after a warm-up process each, alternated {ab['repeat']} times in one run, medians; "
            f"{load_text(ab['machine'])}): {ab['model']}: {rows}. Table: `benchmarks/results/ab_cli_pull.md`.")


def ab_merge_paragraph(ab: dict) -> str:
    """The last change to the merge path: bench_merge's merges by two commits, alternated in one run."""
    rows = ", ".join(f"{r['method']} n={r['tasks']} {r['codec']} {r['before_wall_s']:.2f} -> {r['after_wall_s']:.2f} s "
                     f"({r['ratio_wall_s']:.2f}x, {apart(r)}; memory {r['before_peak_anon_mib']:.0f} -> "
                     f"{r['after_peak_anon_mib']:.0f} MiB, {r['after_peak_anon_mib'] / ((r['tasks'] + 2) * ab['largest_mib']):.2f}x "
                     f"the bound)" for r in ab["rows"])
    return (f"**Before and after, merges** (`make bench-ab-merge BEFORE={ab['before']}`: `benchmarks/ab_rebuild.py --merge`, "
            f"bench_merge's `merge_to_dir` by tvstore at {ab['before']} and at {ab['after']}, after a warm-up child "
            f"each, alternated {ab['repeat']} times in one run, medians; memory is the peak above the child's start, "
            f"the bound (inputs + 2) x the largest tensor; {load_text(ab['machine'])}): {ab['model']}: {rows}. "
            f"Table, with a profile of each side: `benchmarks/results/ab_merge.md`.")


def ab_allocator_paragraph(ab: dict) -> str:
    """How much of a merge's memory over the bound is glibc keeping freed blocks, and what returning them costs."""
    bound = lambda r: (r["tasks"] + 2) * ab["largest_mib"]  # noqa: E731
    rows = ", ".join(f"{r['method']} n={r['tasks']} {r['codec']} {r['before_peak_anon_mib'] / bound(r):.2f}x -> "
                     f"{r['after_peak_anon_mib'] / bound(r):.2f}x the bound in {r['before_wall_s']:.2f} -> "
                     f"{r['after_wall_s']:.2f} s ({r['ratio_wall_s']:.2f}x, {apart(r)})" for r in ab["rows"])
    return (f"**A merge's memory and the allocator** (`make bench-allocator`: `benchmarks/ab_rebuild.py --merge "
            f"--allocator`, bench_merge's `merge_to_dir` by tvstore at {ab['after']} with glibc malloc's defaults, "
            f"then with `MALLOC_MMAP_THRESHOLD_=1048576`, which maps every block of 1 MiB or more on its own and "
            f"returns it when freed, alternated {ab['repeat']} times in one run, medians; memory is the peak above the "
            f"child's start; {load_text(ab['machine'])}): {ab['model']}: {rows}. Table: "
            f"`benchmarks/results/ab_merge_allocator.md`.")


def codecs_paragraph(c: dict) -> str:
    best = c["smallest_under_0.3"]
    ll, zs, zp = best["lossless"], best["zstd-3 (fp32 bytes)"], best["zipnn"]
    fast = [x["decode_MBps"] for x in c["rows"] if x["setting"].startswith(("quant:", "ternary:"))]
    smallest = ", ".join(f"{k} `{v['setting']}` {v['bytes_per_param']:.3f} B/param ({v['ratio_vs_fp32']:.1f}x)"
                         for k, v in best.items() if k in ("quant", "rtvq", "sparse", "lowrank"))
    where = f"; {load_text(c['meta']['machine'])}" if "machine" in c["meta"] else ""
    return (f"**Codecs** (`python benchmarks/bench_codecs.py`, real {c['meta']['model']} fine-tune deltas, fp32, one "
            f"thread{where}): lossless stores {ll['bytes_per_param']:.2f} bytes/param ({ll['ratio_vs_fp32']:.2f}x), against "
            f"{zs['ratio_vs_fp32']:.2f}x for plain zstd and {zp['ratio_vs_fp32']:.2f}x for ZipNN on the same deltas; "
            f"encode / decode {ll['encode_MBps']:.0f} / {ll['decode_MBps']:.0f} MB/s vs ZipNN's "
            f"{zp['encode_MBps']:.0f} / {zp['decode_MBps']:.0f}. Smallest footprint with relative L2 error under "
            f"0.3: {smallest}. `quant` and `ternary` decode at {span([f / 1000 for f in fast], '{:.1f}')} GB/s "
            f"per core. Table: `benchmarks/results/codecs.json`.")


def merge_paragraph(m: dict) -> str:
    rows = [r for r in m["rows"] if "error" not in r]

    def ratio(kind: str, key: str) -> list[float]:
        return [r["tvstore"][key] / r["ref"][key] for r in rows if r["kind"] == kind]

    text = (f"**Merges vs mergekit** (`python benchmarks/bench_merge.py`, {m['model'].split(',')[0]}, "
            f"{span([r['tasks'] for r in rows if r['kind'] == 'ties'], '{:.0f}')} tasks, tvstore time / mergekit "
            f"time; {load_text(m['machine'])}): TIES {span(ratio('ties', 'warm_s'))}x warm and {span(ratio('ties', 'cold_s'))}x cold, task "
            f"arithmetic {span(ratio('task_arithmetic', 'warm_s'))}x warm and "
            f"{span(ratio('task_arithmetic', 'cold_s'))}x cold; peak RSS {span(ratio('task_arithmetic', 'peak_rss_mib'))}x "
            f"(task arithmetic) and {span(ratio('ties', 'peak_rss_mib'))}x (TIES) mergekit's.")
    merges = [r for r in rows if r["kind"] in ("task_arithmetic", "ties") and "work_over_bound" in r]
    if merges:
        bound = lambda kind: span([r["work_over_bound"] for r in merges if r["kind"] == kind])  # noqa: E731
        text += (f" Working memory (peak anonymous memory above the process's start, after imports) over the bound "
                 f"(inputs + 2) x the largest tensor: task arithmetic {bound('task_arithmetic')}x, TIES {bound('ties')}x.")
    scale = [s for s in m.get("scale", []) if s.get("peak_anon_mib")]
    if scale:
        text += (f" Peak anonymous memory of push, pull and a 2-way merge: "
                 f"{span([s['peak_anon_mib'] / s['largest_mib'] for s in scale], '{:.0f}')} times the largest tensor "
                 f"from {span([s['params'] / 1e6 for s in scale], '{:,.0f}')}M parameters.")
    return text + " Table: `benchmarks/results/merge.md`."


def team_paragraph(meta: dict | None, pp: dict | None) -> str:
    parts = []
    if meta:
        res = meta["results"]
        n = res[0]["rows"]
        api = lambda key: [r["api_s"][key] * 1000 for r in res]  # noqa: E731
        cli = [v for r in res for k, v in r["cli_s"].items() if not k.startswith("tvstore --help")]
        parts.append(f"with {n['vectors']:,} vectors ({n['tensors']:,} tensors), `ls` takes "
                     f"{span(api('ls (newest of each name)'), '{:.0f}')} ms, `show` {span(api('show NAME'), '{:.0f}')} ms "
                     f"and `lineage` {span(api('lineage NAME (ancestors)') + api('lineage NAME@1 (descendants)'), '{:.0f}')} "
                     f"ms on {' and '.join(r['backend'] for r in res)}; the `tvstore` command answers in "
                     f"{span(cli, '{:.1f}')} s (`benchmarks/bench_metadata.py`"
                     + (f"; {load_text(meta['machine'])}" if "machine" in meta else "") + ")")
    if pp:
        def row(backend: str, clients: int) -> str:
            rs = [r for r in pp["rows"] if r["backend"] == backend and r["clients"] == clients]
            return " / ".join(f"{r['push_mb_s']:.0f}/{r['pull_mb_s']:.0f}" for r in rs)

        backends = sorted({r["backend"] for r in pp["rows"]})
        clients = sorted({r["clients"] for r in pp["rows"]})
        cells = "; ".join(f"{b}, {c} client{'s' if c > 1 else ''}: {row(b, c)}" for b in backends for c in clients)
        parts.append(f"push/pull MB/s of {pp['meta']['data']} ({pp['meta']['fp32_mb_per_client']:.0f} MB fp32 per "
                     f"client; codecs {', '.join(dict.fromkeys(r['codec'] for r in pp['rows']))} in that order): {cells} "
                     f"(`benchmarks/bench_push_pull.py`"
                     + (f"; {load_text(pp['meta']['machine'])}" if "machine" in pp["meta"] else "") + ")")
    return "**Team scale**: " + "; ".join(parts) + "." if parts else ""


PARAGRAPHS: list[tuple[str, Callable[[], str | None]]] = [
    ("rebuild", lambda: rebuild_paragraph(r) if (r := load("rebuild")) else None),
    ("rebuild_scale", lambda: scale_paragraph(s, load("rebuild")) if (s := load("rebuild_scale")) else None),
    ("ab_rebuild", lambda: ab_paragraph(ab, load("ab_rebuild_scale")) if (ab := load("ab_rebuild")) else None),
    ("ab_cli_pull", lambda: ab_cli_paragraph(ab) if (ab := load("ab_cli_pull")) else None),
    ("ab_merge", lambda: ab_merge_paragraph(ab) if (ab := load("ab_merge")) else None),
    ("ab_merge_allocator", lambda: ab_allocator_paragraph(ab) if (ab := load("ab_merge_allocator")) else None),
    ("codecs", lambda: codecs_paragraph(c) if (c := load("codecs")) else None),
    ("merge", lambda: merge_paragraph(m) if (m := load("merge")) else None),
    ("metadata", lambda: team_paragraph(load("metadata"), load("push_pull")) or None),
]


def provenance(name: str) -> str:
    """When the result file was last written, read from git, so an old figure never passes for a new one."""
    also = {"metadata": ["push_pull"], "ab_rebuild": ["ab_rebuild_scale"]}.get(name, [])
    files = [f"benchmarks/results/{n}.json" for n in [name, *also] if n == name or (RESULTS / f"{n}.json").exists()]
    stamps = []
    for f in files:
        out = subprocess.run(["git", "log", "-1", "--format=%h %cs", "--", f], cwd=ROOT, capture_output=True, text=True)
        stamps.append(f"`{Path(f).name}` committed in {out.stdout.strip() or 'no commit yet'}")
    return f" (Result file{'s' if len(stamps) > 1 else ''}: {'; '.join(stamps)}.)"


def block() -> str:
    out = [BEGIN, "<!-- generated by benchmarks/update_readme.py from benchmarks/results/*.json: edit that, not this -->", ""]
    for name, make in PARAGRAPHS:
        text = make()
        make_target = {"rebuild_scale": "make bench-scale", "ab_rebuild": "make bench-ab BEFORE=<commit>",
                       "ab_cli_pull": "make bench-ab BEFORE=<commit>", "ab_merge": "make bench-ab-merge BEFORE=<commit>",
                       "ab_merge_allocator": "make bench-allocator"}.get(
            name, "make bench")
        out += [text + provenance(name) if text else f"(`benchmarks/results/{name}.json` is missing: run `{make_target}`.)", ""]
    return "\n".join(out) + END


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--readme", type=Path, default=ROOT / "README.md")
    a = ap.parse_args()
    text = a.readme.read_text()
    if text.count(BEGIN) != 1 or text.count(END) != 1:
        print(f"error: {a.readme} needs exactly one {BEGIN} ... {END} block", file=sys.stderr)
        return 2
    head, rest = text.split(BEGIN)
    _, tail = rest.split(END)
    new = head + block() + tail
    if a.check:
        return 0 if new == text else 1
    a.readme.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())

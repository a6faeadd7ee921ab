"""Before and after: the rebuild into memory (or, with ``--cli``, a whole ``tvstore pull --checkpoint``
process) of one tvstore commit against another, alternated in one run.

A change to the read path moves a rebuild by less than two runs of ``make bench``
differ on a shared machine (load, page cache, how fragmented free memory is), so
a speed-up is judged side by side instead: the commit ``--before`` is checked
out into a git worktree under ``--work``, and each measured child imports
tvstore from that tree or from this checkout (``PYTHONPATH``) while running
this checkout's measuring child (``bench_rebuild.child_rebuild``), so tvstore is
the only difference. The children alternate, before then after, ``--repeat``
times; the table gives medians, the after/before ratio of each and the spread
of the runs. The registries are made by this checkout, so ``--before`` must
read them (the same database schema).

With ``--cli`` each child is a whole CLI process pulling the fine-tune to a
folder (warm page cache), start-up and exit included: the change a command's
start-up or exit makes, which an in-process rebuild does not see. The CLI's
source folder (``cli/``) installs inside ``tvstore``, so each side's is reached
through a shim folder on ``tvstore``'s package path, the same way on both sides.

With ``--merge`` each child is bench_merge's merge (``Registry.merge_to_dir`` of
task arithmetic and TIES over 2 and 8 of its fine-tunes, lossless and 4-bit,
its 25M-parameter fp32 model and registries), and each row also profiles both
sides once: the merge's tensors computed on one thread under cProfile, own
time per part.

With ``--merge --allocator`` (no ``--before``) both sides are this checkout's
merges, the "after" side with glibc malloc's mmap threshold fixed at 1 MiB: how
much of a merge's memory over the design's bound is the allocator keeping
freed blocks, and what returning them costs in time.

Results: ``benchmarks/results/ab_rebuild.{md,json}`` (``--scale``: ``ab_rebuild_scale``; ``--cli``:
``ab_cli_pull``; ``--merge``: ``ab_merge``; ``--merge --allocator``: ``ab_merge_allocator``).

    python benchmarks/ab_rebuild.py --work /tmp/tvab --before 665964b            # 168M, ~2 min
    python benchmarks/ab_rebuild.py --work /tmp/tvab --before 665964b --scale    # 1.2B, ~5 min
    python benchmarks/ab_rebuild.py --work /tmp/tvab --before 665964b --cli      # 168M, CLI pulls, ~2 min
    python benchmarks/ab_rebuild.py --work /tmp/tvab --before 665964b --merge    # 25M fp32 merges, ~6 min
    python benchmarks/ab_rebuild.py --work /tmp/tvab --merge --allocator --repeat 3    # ~4 min
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch

import bench_merge as bm  # noqa: E402  (this folder is on sys.path when run as a script)
import bench_rebuild as br  # noqa: E402
import machine  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MEASURES = ("wall_s", "cpu_user_s", "cpu_sys_s", "peak_anon_mib")


def checkout(rev: str, work: Path) -> tuple[Path, str]:
    """A detached worktree of ``rev`` under ``work`` (made once per commit) and the commit's short hash."""
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", rev], check=True,
                            capture_output=True, text=True).stdout.strip()
    tree = work / f"tvstore-{commit}"
    if not (tree / "tvstore").is_dir():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--force", "--detach", str(tree), commit],
                       check=True, capture_output=True)
    return tree, commit


def tree_env(tree: Path, extra_env: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment for a child importing tvstore from ``tree`` (``extra_env`` set on top)."""
    return {**os.environ, "PYTHONPATH": str(tree), **(extra_env or {})}


def measured(tree: Path, home: Path, codec: str, workers: int) -> dict:
    """One rebuild child importing tvstore from ``tree``."""
    return br.child("rebuild", str(home), br.vector_ref(codec), str(workers), env=tree_env(tree))


def cli_pull(tree: Path, shim: Path, home: Path, codec: str, out: Path) -> dict:
    """Wall seconds of one whole ``tvstore pull --checkpoint`` process running ``tree``'s tvstore and CLI."""
    launch = ("import sys, tvstore; tvstore.__path__.insert(0, sys.argv.pop(1)); from tvstore.cli.app import main; "
              "sys.argv[0] = 'tvstore'; main()")
    cmd = [sys.executable, "-c", launch, str(shim), "--home", str(home), "pull", br.vector_ref(codec), "--checkpoint",
           "--out", str(out)]
    env = tree_env(tree)
    os.sync()  # as bench_rebuild.timed: the last run's writeback is not this run's
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, env=env, cwd=out.parent)  # not a folder holding a tvstore
    wall = time.perf_counter() - t0
    shutil.rmtree(out, ignore_errors=True)
    return {"wall_s": wall}


def merged(tree: Path, home: Path, recipe: Path, out: Path, child: str = "tvstore",
           extra_env: dict[str, str] | None = None) -> dict:
    """One bench_merge child importing tvstore from ``tree`` (with ``extra_env`` set): the merge written to ``out``,
    or (``tvstore-profile``) its tensors computed under cProfile."""
    env = tree_env(tree, extra_env)
    args = [str(home), str(recipe), str(out), ""] if child == "tvstore" else [str(home), str(recipe)]
    return bm.child(child, *args, out=out, env=env)


def cli_shim(tree: Path, work: Path, side: str) -> Path:
    """A folder holding ``cli`` and ``migrations`` links to ``tree``'s, put first on ``tvstore.__path__``."""
    shim = work / f"cli-shim-{side}"
    shim.mkdir(parents=True, exist_ok=True)
    for name in ("cli", "migrations"):
        link = shim / name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(tree / name)
    return shim


def row(children: dict[str, Callable[[], dict]], label: dict, repeat: int, measures: tuple[str, ...]) -> dict:
    """One warm-up child per side (not counted), then before and after alternated ``repeat`` times; medians."""
    for child in children.values():  # the row's first child pays for a cold start
        child()
    runs: dict[str, list[dict]] = {side: [] for side in children}
    for _ in range(repeat):
        for side, child in children.items():
            runs[side].append(child())
    for side_runs in runs.values():
        for r in side_runs:  # peak memory above the child's start, as bench_rebuild reports it
            if "peak_anon_mib" in r:
                r["peak_anon_mib"] -= r.get("start_anon_mib", 0.0)
    out = {**label, "runs": runs}
    for side in children:
        for key in measures:
            out[f"{side}_{key}"] = statistics.median(r[key] for r in runs[side])
        walls = [r["wall_s"] for r in runs[side]]
        out[f"{side}_wall_range"] = [min(walls), max(walls)]
    for key in measures:
        out[f"ratio_{key}"] = out[f"after_{key}"] / out[f"before_{key}"]
    what = " ".join(str(label[k]) for k in ("method", "tasks", "codec") if k in label)
    print(f"  {what} x{label['workers']}: before {out['before_wall_s']:.2f}s after {out['after_wall_s']:.2f}s",
          flush=True)
    return out


def rebuild_rows(trees: dict[str, Path], homes: dict[str, Path], a: argparse.Namespace) -> list[dict]:
    return [row({side: partial(measured, tree, homes[codec], codec, workers) for side, tree in trees.items()},
                {"codec": codec, "workers": workers}, a.repeat, MEASURES)
            for codec in br.SCALE_CODECS for workers in br.rebuild_threads(codec, a.scale)]


def cli_rows(trees: dict[str, Path], homes: dict[str, Path], a: argparse.Namespace, work: Path) -> list[dict]:
    out = work / "ab-out"
    shutil.rmtree(out, ignore_errors=True)
    shims = {side: cli_shim(tree, a.work, side) for side, tree in trees.items()}
    return [row({side: partial(cli_pull, tree, shims[side], homes[codec], codec, out) for side, tree in trees.items()},
                {"codec": codec, "workers": 0}, a.repeat, ("wall_s",))
            for codec in br.SCALE_CODECS]


MERGES = [(method, n) for method in ("task_arithmetic", "ties") for n in (2, 8)]


#: glibc's malloc with a fixed 1 MiB mmap threshold: every block of a MiB or more is its own mapping, unmapped when
#: freed. By default the threshold rises to the largest block freed so far (up to 32 MiB), so a merge's
#: tensor-sized blocks come from the heap arenas, which keep freed memory for reuse.
MMAP_1MIB = {"MALLOC_MMAP_THRESHOLD_": str(2**20)}


def merge_rows(trees: dict[str, Path], a: argparse.Namespace, envs: dict[str, dict[str, str]] | None = None,
               ) -> list[dict]:
    """bench_merge's merges by each side (``envs``: a side's extra environment); a profile per side unless ``envs``
    (the same code on both sides: the profile would not differ)."""
    envs = envs or {}
    work = a.work / "merge"
    homes = bm.prepare(work, bm.llama_config(**bm.MODEL), max(n for _, n in MERGES), br.SCALE_CODECS)
    rows = []
    for method, n in MERGES:
        recipe = work / f"{method}-{n}.yml"
        recipe.write_text(bm.mergekit_yaml(method, n))
        for codec in br.SCALE_CODECS:
            children = {side: partial(merged, tree, homes[codec], recipe, work / f"ab-out-{side}",
                                      extra_env=envs.get(side)) for side, tree in trees.items()}
            r = row(children, {"method": method, "tasks": n, "codec": codec, "workers": 2}, a.repeat, MEASURES)
            if not envs:
                r["profile"] = {side: merged(tree, homes[codec], recipe, work / "ab-out", "tvstore-profile")["parts"]
                                for side, tree in trees.items()}
            rows.append(r)
    return rows


def report(res: dict) -> str:
    if res.get("cli"):
        return cli_report(res)
    if res.get("merge"):
        return merge_report(res)
    lines = [f"# Rebuild into memory, before and after ({res['model']})", "",
             machine.describe(res["machine"]), "", f"Command: `{res['command']}`", "",
             f"Before: tvstore at {res['before']}; after: tvstore at {res['after']}. Each row runs one uncounted "
             f"warm-up child per side, then alternates a before and an after child {res['repeat']} times (`Registry.rebuild`, every tensor read by a one-thread "
             "consumer, bench_rebuild's child); medians, with the range of the wall times.", "",
             "| codec | threads | before s | after s | after / before | before range s | after range s "
             "| CPU user s before / after | CPU sys s before / after | peak memory above start MiB before / after |",
             "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for r in res["rows"]:
        lines.append(
            f"| {r['codec']} | {r['workers']} | {r['before_wall_s']:.2f} | {r['after_wall_s']:.2f} "
            f"| {r['ratio_wall_s']:.2f}x | {r['before_wall_range'][0]:.2f}-{r['before_wall_range'][1]:.2f} "
            f"| {r['after_wall_range'][0]:.2f}-{r['after_wall_range'][1]:.2f} "
            f"| {r['before_cpu_user_s']:.2f} / {r['after_cpu_user_s']:.2f} "
            f"| {r['before_cpu_sys_s']:.2f} / {r['after_cpu_sys_s']:.2f} "
            f"| {r['before_peak_anon_mib']:.0f} / {r['after_peak_anon_mib']:.0f} |")
    return "\n".join(lines) + "\n"


def cli_report(res: dict) -> str:
    lines = [f"# `tvstore pull --checkpoint` as a whole process, before and after ({res['model']})", "",
             machine.describe(res["machine"]), "", f"Command: `{res['command']}`", "",
             f"Before: tvstore and its CLI at {res['before']}; after: at {res['after']}. Each row runs one uncounted "
             f"warm-up process per side, then alternates a before and an after process {res['repeat']} times, each "
             "pulling ft0 to a fresh folder (warm page cache, start-up and exit included); medians, with the range.", "",
             "| codec | before s | after s | after / before | before range s | after range s |",
             "|---|--:|--:|--:|--:|--:|"]
    for r in res["rows"]:
        lines.append(
            f"| {r['codec']} | {r['before_wall_s']:.2f} | {r['after_wall_s']:.2f} | {r['ratio_wall_s']:.2f}x "
            f"| {r['before_wall_range'][0]:.2f}-{r['before_wall_range'][1]:.2f} "
            f"| {r['after_wall_range'][0]:.2f}-{r['after_wall_range'][1]:.2f} |")
    return "\n".join(lines) + "\n"


def merge_model() -> tuple[str, float]:
    """bench_merge's default model, described, and its largest tensor in fp32 MiB."""
    cfg = bm.llama_config(**bm.MODEL)
    params = sum(torch.Size(shape).numel() for _, shape in bm.llama_shapes(cfg))
    largest = bm.largest_tensor_mib(cfg)
    return f"{params / 1e6:.1f}M parameters, fp32, largest tensor {largest:.0f} MiB", largest


def merge_report(res: dict) -> str:
    sides = (f"Before: tvstore at {res['before']}; after: tvstore at {res['after']}." if not res.get("allocator") else
             f"Before: tvstore at {res['after']} with glibc malloc's defaults; after: the same with "
             f"`{' '.join(f'{k}={v}' for k, v in MMAP_1MIB.items())}` (every block of 1 MiB or more mapped on its own "
             "and returned when freed; by default the threshold rises to the largest block freed, up to 32 MiB, "
             "and the heap keeps freed tensor-sized blocks for reuse).")
    lines = [f"# Merges, before and after ({res['model']})", "", machine.describe(res["machine"]), "",
             f"Command: `{res['command']}`", "",
             f"{sides} Each row runs one uncounted "
             f"warm-up child per side, then alternates a before and an after child {res['repeat']} times "
             "(bench_merge's `Registry.merge_to_dir` child, 2 worker threads, warm page cache); medians, with the range "
             "of the wall times. Memory: peak anonymous memory above the child's start (after imports), also over "
             "the design's bound, (inputs + 2) x the largest tensor in fp32.", "",
             "| method | n | codec | before s | after s | after / before | before range s | after range s "
             "| CPU user s before / after | CPU sys s before / after | memory MiB before / after "
             "| memory / bound before / after |",
             "|---|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for r in res["rows"]:
        bound = (r["tasks"] + 2) * res["largest_mib"]
        lines.append(
            f"| {r['method']} | {r['tasks']} | {r['codec']} | {r['before_wall_s']:.2f} | {r['after_wall_s']:.2f} "
            f"| {r['ratio_wall_s']:.2f}x | {r['before_wall_range'][0]:.2f}-{r['before_wall_range'][1]:.2f} "
            f"| {r['after_wall_range'][0]:.2f}-{r['after_wall_range'][1]:.2f} "
            f"| {r['before_cpu_user_s']:.2f} / {r['after_cpu_user_s']:.2f} "
            f"| {r['before_cpu_sys_s']:.2f} / {r['after_cpu_sys_s']:.2f} "
            f"| {r['before_peak_anon_mib']:.0f} / {r['after_peak_anon_mib']:.0f} "
            f"| {r['before_peak_anon_mib'] / bound:.2f} / {r['after_peak_anon_mib'] / bound:.2f} |")
    if res.get("allocator"):
        return "\n".join(lines) + "\n"
    lines += ["", "Where the time goes: one profiled run per side and row, the merge's tensors computed on one thread "
              "(not written), seconds of own time per part, the three largest parts of each side.", "",
              "| method | n | codec | before | after |", "|---|--:|---|---|---|"]
    for r in res["rows"]:
        top = {side: ", ".join(f"{name} {sec:.2f}" for name, sec in sorted(
            r["profile"][side].items(), key=lambda kv: -kv[1])[:3]) + f" (of {sum(r['profile'][side].values()):.2f} s)"
            for side in ("before", "after")}
        lines.append(f"| {r['method']} | {r['tasks']} | {r['codec']} | {top['before']} | {top['after']} |")
    return "\n".join(lines) + "\n"


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, required=True, help="models, registries and the --before worktree")
    ap.add_argument("--before", help="the commit to compare this checkout with")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--scale", action="store_true", help="the 1.2B-parameter model")
    ap.add_argument("--cli", action="store_true", help="whole `tvstore pull --checkpoint` processes (168M)")
    ap.add_argument("--merge", action="store_true", help="bench_merge's merges (25M fp32), with a profile per side")
    ap.add_argument("--allocator", action="store_true",
                    help="with --merge: this checkout's merges with glibc malloc's defaults vs a fixed 1 MiB mmap "
                         "threshold (no --before)")
    a = ap.parse_args()
    if sum([a.cli, a.scale, a.merge]) > 1:
        ap.error("--cli, --scale and --merge are separate runs")
    if a.allocator != (a.before is None) or (a.allocator and not a.merge):
        ap.error("give --before COMMIT, or --merge --allocator")
    a.size = "1.2B" if a.scale else "168M"
    return a


def main() -> None:
    a = parse_args()
    before_tree, before = (ROOT, "") if a.allocator else checkout(a.before, a.work)
    before_state = machine.snapshot(settle=True)
    trees = {"before": before_tree, "after": ROOT}
    if a.merge:
        envs = {"after": MMAP_1MIB} if a.allocator else None
        rows, model, largest_mib = merge_rows(trees, a, envs), *merge_model()
    else:
        cfg = bm.llama_config(*br.SIZES[a.size])
        params, nbytes, largest_mib = br.model_sizes(cfg)
        work = a.work / a.size
        work.mkdir(parents=True, exist_ok=True)
        homes = br.prepare(work, cfg, br.SCALE_CODECS, reuse=True)  # bench_rebuild's in-memory rows, for these codecs
        rows = cli_rows(trees, homes, a, work) if a.cli else rebuild_rows(trees, homes, a)
        model = (f"{params / 1e6:.1f}M parameters, bf16, {nbytes / 2**20:.0f} MiB per checkpoint, "
                 f"largest tensor {largest_mib:.0f} MiB")
    res = {"model": model, "largest_mib": largest_mib,
           "before": before, "after": before_state["commit"], "cli": a.cli, "merge": a.merge, "allocator": a.allocator,
           "repeat": a.repeat, "command": "python " + " ".join(sys.argv), "rows": rows,
           "machine": machine.finish(before_state)}
    text = report(res)
    print(text)
    name = ("ab_merge_allocator" if a.allocator else "ab_merge" if a.merge else "ab_cli_pull" if a.cli
            else "ab_rebuild_scale" if a.scale else "ab_rebuild")
    path = bm.results_path(name, a.work, quick=False)
    path.with_suffix(".md").write_text(text)
    path.with_suffix(".json").write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()

"""Searches steered by the user's own score: the smallest codec that keeps it, the best merge parameters.

A *score* is any function of a rebuilt checkpoint directory that returns one
number, higher is better: a Python callable, or a shell command such as
``python eval.py {dir}`` that prints the number as the last line of its
standard output (:func:`command_score`). Scores are cached by the digest of
the rebuilt weights, so two settings that rebuild the same model are scored
once.

Codec search (``push --codec auto --target T --score-cmd ...``): the lossless
rebuild (the fine-tune itself) sets the reference score ``s0``; each codec
family is a ladder of settings ordered from the largest footprint to the
smallest, and a bisection on the ladder finds the smallest setting whose
score is at least ``T * s0`` (assuming a smaller footprint never scores
higher, which the trail lets a user check). The smallest passing setting
over all families is the answer; lossless when none passes.

Merge search (``merge --search 'lambda=0.1:1.0' --score-cmd ...``): each
searched parameter is tried on an evenly spaced grid, one parameter at a
time with the others at their best so far (one coordinate sweep).

Every trial is recorded (setting, stored bytes, score), so the result's
``trail`` shows how the answer was found.
"""

from __future__ import annotations

import math
import shlex
import subprocess
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from tvstore.checkpoint import TensorInfo, open_checkpoint, write_checkpoint_dir
from tvstore.checkpoint.digest import manifest_digest, tensor_digest
from tvstore.errors import TvstoreError, UsageError
from tvstore.tensors.codec_plan import parse_plan_codec
from tvstore.tensors.components import delta_of_encoded
from tvstore.tensors.encode import encode_delta
from tvstore.tensors.sources import BaseSource
from tvstore.util.parallel import ordered_map
from tvstore.util.progress import Progress, no_progress
from tvstore.util.refs import parse_ref

Score = Callable[[Path], float]

#: codec ladders ``--codec auto --target`` bisects, each from the largest footprint to the smallest
FAMILIES: dict[str, tuple[str, ...]] = {
    "quant": tuple(f"quant:bits={b},granularity=group,group_size=128,clip=mse" for b in (8, 4, 3, 2, 1)),
    "sign": tuple(f"sign:density={d}" for d in (0.3, 0.2, 0.1, 0.05, 0.02, 0.01)),
    # Delta-CoMe's mixed-precision SVD, rank 128 down to 8 (a short fine-tune's delta is nearly low-rank)
    "svdmix": tuple(f"svdmix:rank={r},top={t}" for r, t in ((128, 16), (64, 8), (32, 8), (16, 4), (8, 2))),
    "auto": tuple(f"auto:max_error={e}" for e in (0.02, 0.05, 0.1, 0.2, 0.35, 0.5, 0.7)),
}
_TAIL = 300


# ---- scores -----------------------------------------------------------------------------


def command_score(command: str, timeout: float | None = None) -> Score:
    """A score that runs ``command`` with ``{dir}`` replaced by the checkpoint directory.

    The last non-empty line of its standard output must be one number. A
    non-zero exit, a timeout or anything else is a one-line error naming the
    command and the tail of its standard error.
    """
    if "{dir}" not in command:
        raise UsageError(f"--score-cmd must contain {{dir}} (where the rebuilt checkpoint goes), got {command!r}")

    def score(directory: Path) -> float:
        line = command.replace("{dir}", shlex.quote(str(directory)))
        try:
            done = subprocess.run(line, shell=True, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise TvstoreError(f"score command {command!r} did not finish in {timeout:g} s") from None
        tail = _one_line(done.stderr)
        if done.returncode != 0:
            raise TvstoreError(f"score command {command!r} failed (exit {done.returncode}): {tail or 'no stderr'}")
        lines = [x.strip() for x in done.stdout.splitlines() if x.strip()]
        try:
            value = float(lines[-1])
        except (IndexError, ValueError):
            printed = _one_line(lines[-1] if lines else "")
            raise TvstoreError(
                f"score command {command!r} printed {printed!r}, not a number" + (f"; stderr: {tail}" if tail else "")
            ) from None
        if not math.isfinite(value):
            raise TvstoreError(f"score command {command!r} printed {value}, not a finite number")
        return value

    return score


def _one_line(text: str) -> str:
    flat = " | ".join(x.strip() for x in text.strip().splitlines() if x.strip())
    return flat if len(flat) <= _TAIL else "..." + flat[-_TAIL:]


class ScoreCache:
    """Scores by the digest of the rebuilt weights: a model is scored once however it was reached."""

    def __init__(self, score: Score) -> None:
        self.score = score
        self.scores: dict[str, float] = {}

    def __call__(self, digest: str, write: Callable[[Path], None]) -> tuple[float, bool]:
        """(score, whether it came from the cache); ``write`` fills a fresh directory only on a miss."""
        if digest in self.scores:
            return self.scores[digest], True
        with tempfile.TemporaryDirectory(prefix="tvstore-score-") as tmp:
            directory = Path(tmp) / "checkpoint"
            write(directory)
            value = self.score(directory)
        self.scores[digest] = float(value)
        return float(value), False


@dataclass
class Trial:
    """One scored setting."""

    setting: str
    score: float
    stored_bytes: int | None = None
    bits_per_param: float | None = None
    cached: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass
class SearchResult:
    """The chosen setting, its score, the reference score and every trial."""

    best: str
    score: float
    reference: float
    target: float | None
    command: str | None
    trail: list[Trial] = field(default_factory=list)

    def to_meta(self) -> dict[str, Any]:
        """What the stored vector's metadata records (``show`` prints it)."""
        out = {"setting": self.best, "score": self.score, "reference_score": self.reference}
        if self.target is not None:
            out["target"] = self.target
        out["command"] = self.command or "(python callable)"
        out["trail"] = [t.to_dict() for t in self.trail]
        return out


# ---- codec search -----------------------------------------------------------------------


Trialled = tuple[str, Callable[[Path], None]]  # (weights digest, write the checkpoint into a directory)


def checkpoint_trial(infos: Sequence[TensorInfo], tensors: Mapping[str, torch.Tensor],
                     side_files: Sequence[tuple[str, bytes]]) -> Trialled:
    """The digest of ``tensors`` (in ``infos`` order) and a writer of them as a checkpoint directory."""
    digest = manifest_digest((i.name, tensor_digest(tensors[i.name])) for i in infos)

    def write(directory: Path) -> None:
        write_checkpoint_dir(directory, infos, ((i.name, tensors[i.name]) for i in infos), side_files)

    return digest, write


class Rebuilder:
    """The fine-tune's tensors in memory, rebuilt through any codec exactly as a pull would read them.

    Holds the whole fine-tune and its base tensors (the search re-encodes
    them for every trial); a push afterwards streams as usual.
    """

    def __init__(self, finetuned: Path, base: BaseSource, side_files: Sequence[tuple[str, bytes]]) -> None:
        with open_checkpoint(finetuned) as ckpt:
            self.infos: list[TensorInfo] = list(ckpt.infos())
            self.tensors = {i.name: ckpt.get(i.name) for i in self.infos}
        self.delta_names = [n for n, t in self.tensors.items() if n in base and t.dtype.is_floating_point]
        self.bases = {n: base.get(n) for n in self.delta_names}
        self.side_files = list(side_files)
        self.params = sum(self.tensors[n].numel() for n in self.delta_names)

    def rebuilt(self, spec: str | None) -> tuple[Trialled, int]:
        """(trial, stored delta bytes) through codec ``spec``; ``None`` is the lossless rebuild (the fine-tune)."""
        if spec is None:
            return checkpoint_trial(self.infos, self.tensors, self.side_files), 0
        codec = parse_plan_codec(spec)

        def one(name: str) -> tuple[torch.Tensor, int]:
            base = self.bases[name]
            enc = encode_delta(name, self.tensors[name] - base, codec)
            return base.clone().add_(delta_of_encoded(enc.components, tuple(base.shape), base.dtype)), enc.stored_bytes

        out, stored = dict(self.tensors), 0
        for name, (theta, size) in zip(self.delta_names, ordered_map(one, self.delta_names)):
            out[name], stored = theta, stored + size
        return checkpoint_trial(self.infos, out, self.side_files), stored


def search_codec(
    rebuilder: Rebuilder,
    scores: ScoreCache,
    target: float,
    families: Mapping[str, Sequence[str]] = FAMILIES,
    command: str | None = None,
    progress: Progress = no_progress,
) -> SearchResult:
    """The smallest setting over ``families`` whose score is at least ``target`` x the lossless score."""
    trail: list[Trial] = []

    def trial(spec: str | None) -> Trial:
        trialled, stored = rebuilder.rebuilt(spec)
        value, cached = scores(*trialled)
        bits = 8 * stored / max(1, rebuilder.params) if spec else None
        t = Trial(spec or "lossless", value, stored if spec else None, bits, cached)
        trail.append(t)
        advance(1)
        return t

    steps = 1 + sum(math.ceil(math.log2(len(f) + 1)) for f in families.values())
    with progress("searching codecs by score", steps) as advance:
        reference = trial(None).score
        threshold = target * reference
        passing = [t for ladder in families.values() if (t := _bisect(ladder, trial, threshold)) is not None]
    if not passing:
        return SearchResult("lossless", reference, reference, target, command, trail)
    best = min(passing, key=lambda t: (t.stored_bytes, -t.score))
    return SearchResult(best.setting, best.score, reference, target, command, trail)


def _bisect(ladder: Sequence[str], trial: Callable[[str], Trial], threshold: float) -> Trial | None:
    """The last (smallest-footprint) rung scoring >= threshold, by bisection; None if no rung tried passed.

    Assumes scores fall as rungs shrink; where they do not, the trail shows it.
    """
    lo, hi, found = 0, len(ladder) - 1, None
    while lo <= hi:
        mid = (lo + hi) // 2
        t = trial(ladder[mid])
        if t.score >= threshold:
            found, lo = t, mid + 1
        else:
            hi = mid - 1
    return found


# ---- merge search -----------------------------------------------------------------------


@dataclass(frozen=True)
class SearchAxis:
    """One searched recipe parameter: ``key`` (``lambda``, ``weight``, ``NAME.weight``, ...) over a grid."""

    key: str
    values: tuple[float, ...]

    @classmethod
    def parse(cls, text: str) -> SearchAxis:
        """``KEY=LO:HI`` (5 points) or ``KEY=LO:HI:N``."""
        key, eq, rng = text.partition("=")
        parts = rng.split(":")
        try:
            lo, hi = float(parts[0]), float(parts[1])
            n = int(parts[2]) if len(parts) == 3 else 5
        except (ValueError, IndexError):
            raise UsageError(f"bad --search {text!r}: expected KEY=LO:HI or KEY=LO:HI:N, e.g. lambda=0.1:1.0") from None
        if not eq or not key.strip() or len(parts) > 3 or not (math.isfinite(lo) and math.isfinite(hi)) or not 2 <= n <= 50:
            raise UsageError(f"bad --search {text!r}: expected KEY=LO:HI or KEY=LO:HI:N (2 <= N <= 50)")
        return cls(key.strip(), tuple(round(lo + (hi - lo) * i / (n - 1), 10) for i in range(n)))


def set_param(recipe: Mapping[str, Any], key: str, value: float) -> dict[str, Any]:
    """A copy of a tvstore recipe with ``key`` set: a method parameter, every input's setting, or ``REF.setting``."""
    out = {**recipe, "inputs": [dict(i) if isinstance(i, Mapping) else {"ref": i} for i in recipe.get("inputs", [])]}
    ref, dot, setting = key.rpartition(".")
    if dot:
        hits = [i for i in out["inputs"] if str(i.get("ref")) == ref or parse_ref(str(i.get("ref"))).name == ref]
        if not hits:
            raise UsageError(f"--search {key!r}: the recipe has no input {ref!r}")
        for i in hits:
            i[setting] = value
    elif key in ("weight", "density"):
        for i in out["inputs"]:
            i[key] = value
    else:
        out["params"] = {**recipe.get("params", {}), key: value}
    return out


def search_recipe(
    recipe: Mapping[str, Any],
    axes: Sequence[SearchAxis],
    merge: Callable[[Mapping[str, Any]], Trialled],
    scores: ScoreCache,
    command: str | None = None,
    progress: Progress = no_progress,
) -> tuple[dict[str, Any], SearchResult]:
    """(best recipe, result): the recipe as written (the reference), then one coordinate sweep over ``axes``.

    ``merge`` gives a recipe's weights digest and checkpoint writer.
    """
    if not axes:
        raise UsageError("give at least one --search KEY=LO:HI")
    if "inputs" not in recipe:
        raise UsageError("--search needs a recipe in tvstore's format (method, inputs), not mergekit's")
    with progress("searching merge parameters by score", 1 + sum(len(a.values) for a in axes)) as advance:
        reference, cached = scores(*merge(recipe))
        trail = [Trial("as written", reference, cached=cached)]
        advance(1)
        best_recipe, best_score, chosen = dict(recipe), -math.inf, {}
        for axis in axes:
            axis_best: tuple[float, dict[str, Any], float] | None = None
            for value in axis.values:
                candidate = set_param(best_recipe, axis.key, value)
                score, cached = scores(*merge(candidate))
                trail.append(Trial(_label({**chosen, axis.key: value}), score, cached=cached))
                advance(1)
                if axis_best is None or score > axis_best[0]:
                    axis_best = (score, candidate, value)
            assert axis_best is not None
            best_score, best_recipe, chosen = axis_best[0], axis_best[1], {**chosen, axis.key: axis_best[2]}
    return best_recipe, SearchResult(_label(chosen), best_score, reference, None, command, trail)


def _label(values: Mapping[str, float]) -> str:
    return ",".join(f"{k}={v:g}" for k, v in values.items())


def score_of(score: Score | str) -> tuple[ScoreCache, str | None]:
    """A cached score from a callable or a command line, and the command (for the record)."""
    if isinstance(score, str):
        return ScoreCache(command_score(score)), score
    return ScoreCache(score), None


def search_push_codec(finetuned: Path, base: BaseSource, side_files: Sequence[tuple[str, bytes]], score: Score | str,
                      target: float, progress: Progress = no_progress) -> SearchResult:
    """The codec search of ``push --codec auto --target T --score-cmd CMD`` (see the module docstring)."""
    if not 0 < target <= 1:
        raise UsageError(f"--target must be a number in (0, 1], got {target!r}")
    scores, command = score_of(score)
    return search_codec(Rebuilder(finetuned, base, side_files), scores, target, FAMILIES, command, progress)


def merge_trial(merger: Any, side_files: Sequence[tuple[str, bytes]]) -> Trialled:
    """A merge computed into memory once (scored, and written only if its digest is new)."""
    from tvstore.merge import materialize

    infos = merger.infos()
    return checkpoint_trial(infos, dict(materialize(merger)), side_files)


def push_by_search(push: Callable[..., Any], name: str, finetuned: Path, base: BaseSource, blobs: Any,
                   score: Score | str, target: float, extra: bool, meta: dict[str, Any] | None,
                   progress: Progress = no_progress) -> Any:
    """``push --codec auto --target --score-cmd`` for any registry: search here, then ``push`` the winner.

    The search rebuilds and scores on this machine from ``base`` (a local or a served registry's), so a
    client of ``tvstore serve`` searches exactly as a local user does; only the final push travels.
    """
    from tvstore.ops.pull import side_files

    files = list(side_files(base.base, blobs))
    found = search_push_codec(Path(finetuned), base, files, score, target, progress)
    return push(name, finetuned, base=base.base.name, codec=found.best, extra=extra,
                meta={**(meta or {}), "search": found.to_meta()})


def merge_by_search(recipe: Any, search: list[str], score: Score | str, trial: Callable[[dict[str, Any]], Trialled],
                    save: Callable[[dict[str, Any], SearchResult], Any] | None,
                    progress: Progress = no_progress) -> tuple[dict[str, Any], SearchResult, Any]:
    """``merge --search``: the recipe parameters searched by ``score``, each candidate merged by ``trial``;
    ``save`` (``--save-as``) stores the best. Returns (best recipe, result, what ``save`` returned)."""
    from tvstore.merge.recipe import recipe_mapping

    axes = [SearchAxis.parse(s) for s in search]
    data = recipe_mapping(recipe)
    scores, command = score_of(score)
    best, found = search_recipe(data, axes, trial, scores, command, progress)
    return best, found, save(best, found) if save is not None else None

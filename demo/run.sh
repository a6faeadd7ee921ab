#!/usr/bin/env bash
# The tvstore demo: register a real base model, push two fine-tunes and their
# difference, look at them, rebuild one, and check the rebuild is bit-exact.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/env.sh"  # sets $work (.demo/) and TVSTORE_HOME=$work/registry, whatever the caller exported
py=${PYTHON:-python}

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

cat <<NEXT

Try the CLI yourself on the demo's registry:
  source .venv/bin/activate
  export TVSTORE_HOME=$work/registry
  tvstore ls
The base model is the all-MiniLM-L6-v2 directory at $base;
the two fine-tunes are $work/sports and $work/finance.
NEXT

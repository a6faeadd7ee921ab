# The demo's own folder and environment, sourced by run.sh (and by its test).
# The demo only ever touches .demo/ beside this folder: a TVSTORE_HOME,
# database URL or blob URL the user exported points at *their* registry, so
# it is overridden here, never reused and never deleted.
demo_here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
work=$(cd "$demo_here/.." && pwd)/.demo
export TVSTORE_HOME="$work/registry"
unset TVSTORE_DATABASE_URL TVSTORE_BLOB_URL
mkdir -p "$work"
rm -rf "$work/registry" "$work/rebuilt"

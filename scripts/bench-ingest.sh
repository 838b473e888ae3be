#!/usr/bin/env bash
# End-to-end ingest benchmark on the embedded default with the hash embedder: `frostbyte ingest` takes each
# corpus in through the normal intake path and runs the whole pipeline (parse → policy → chunk → embed → index)
# in-process, then reports MB/s, documents/s, pages/s and its peak RSS. One fresh data directory per format.
#
# Corpora: real documentation shipped by Debian (Python and PostgreSQL manuals, TeX Live PDFs), downloaded and
# unpacked by the team's corpus fetch script into $FROSTBYTE_DATA_CACHE (default ~/.cache/frostbyte-data). The
# Markdown corpus is the Markdown (READMEs, changelogs, guides) of the crates Cargo.lock pins, from cargo's own
# source cache: the Debian packages hold only 0.1 MB of Markdown, too little to measure anything but start-up.
# usage: scripts/bench-ingest.sh [text|markdown|html|pdf|small|mixed ...]   (default: all but small and mixed)
#   small: SMALL_FILES (default 1000) generated one-line text files, each one chunk: the pipeline's cost per
#     document (intake, blobs, queue, transactions, audit) with almost no document work.
#   mixed: every corpus copied COPIES times (default 5) into one tree, for peak RSS on a large corpus.
#   FROSTBYTE_BIN, when set, is the frostbyte binary to run (nothing is built).
#   WORKERS, when set, overrides the in-process worker count (`workers.count`, default 4).
#   PostgreSQL as the metadata store: export FROSTBYTE_DATABASE_URL, FROSTBYTE_AUTH__ADMIN_API_KEY and
#   FROSTBYTE_AUTH__JWT_SECRET (blobs stay in the local data directory). Each run creates its own tenant.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE=${FROSTBYTE_DATA_CACHE:-$HOME/.cache/frostbyte-data}
DOCS=$CACHE/docs
[ -d "$DOCS" ] || { echo "no corpora in $DOCS: fetch them first (see docs/benchmarks.md)" >&2; exit 1; }
if [ -z "${FROSTBYTE_BIN:-}" ]; then
  cargo build --release --quiet --bin frostbyte
fi
BIN=${FROSTBYTE_BIN:-$PWD/${CARGO_TARGET_DIR:-target}/release/frostbyte}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# collect NAME FIND-ARGS...: copies the matching files into $WORK/corpus/NAME, keeping relative paths unique.
collect() {
  local name=$1 root=$2; shift 2
  mkdir -p "$WORK/corpus/$name"
  (cd "$root" && find . -type f "$@" -print0 | xargs -0 -r cp --parents -t "$WORK/corpus/$name")
}

# The source directories of the registry crates Cargo.lock pins, one per line.
locked_crate_dirs() {
  cargo fetch --locked --quiet
  cargo metadata --format-version 1 --locked | python3 -c '
import json, os, sys
for p in json.load(sys.stdin)["packages"]:
    if p["source"]:
        print(os.path.dirname(p["manifest_path"]))'
}

run() {
  local name=$1 dir=$2
  local data="$WORK/data-$name" tenant="bench-$name-$(date +%s)"
  FROSTBYTE_LOG=error "$BIN" --data-dir "$data" tenant create "$tenant" --name Bench --email bench@example.com >/dev/null
  env FROSTBYTE_LOG=error ${WORKERS:+FROSTBYTE_WORKERS__COUNT=$WORKERS} "$BIN" --data-dir "$data" --json ingest "$dir" --tenant "$tenant" \
    > "$WORK/$name.json" || true
  python3 - "$name" "$WORK/$name.json" <<'PY'
import json, sys
name, path = sys.argv[1], sys.argv[2]
s = json.load(open(path))
print(f"{name:<9} {s['accepted']:>6} docs {s['bytes']/1048576:>9.1f} MB {s['elapsed_secs']:>8.1f} s "
      f"{s['mb_per_sec']:>7.2f} MB/s {s['docs_per_sec']:>8.1f} docs/s {s['pages_per_sec']:>7.1f} pages/s "
      f"peak RSS {s['peak_rss_mb']:.0f} MB  (indexed {s['indexed']}, failed {s['failed']}, quarantined "
      f"{s['quarantined']}, rejected {s['rejected']})")
failed = {}
for o in s['outcomes']:
    if o['status'] in ('failed', 'rejected'):
        failed[o['reason']] = failed.get(o['reason'], 0) + 1
if failed:
    print(f"          failures by reason: {failed}")
PY
  # Each run's data stays until the script exits: deleting thousands of files just before the next run makes its
  # file creation slower for minutes on file systems that avoid reusing recently freed inodes (ext4 without a
  # journal scans past them on every create).
}

formats=("$@")
[ ${#formats[@]} -gt 0 ] || formats=(text markdown html pdf)
for f in "${formats[@]}"; do
  case $f in
    text) collect text "$DOCS/python3.11-doc" -name '*.txt' ;;
    markdown)
      while read -r dir; do collect "markdown/$(basename "$dir")" "$dir" -name '*.md'; done < <(locked_crate_dirs) ;;
    html) collect html "$DOCS/postgresql-doc-15" -name '*.html' ;;
    pdf) collect pdf "$DOCS/texlive-latex-recommended-doc" -name '*.pdf' ;;
    small)
      mkdir -p "$WORK/corpus/small"
      for i in $(seq 1 "${SMALL_FILES:-1000}"); do
        echo "Note $i: the pump in bay $((i % 7)) was serviced and its filter replaced." > "$WORK/corpus/small/note-$i.txt"
      done ;;
    mixed)
      for i in $(seq 1 "${COPIES:-5}"); do
        collect "mixed/$i" "$DOCS" \( -name '*.txt' -o -name '*.md' -o -name '*.html' -o -name '*.pdf' \)
      done ;;
    *) echo "unknown format $f" >&2; exit 2 ;;
  esac
  run "$f" "$WORK/corpus/$f"
done

#!/usr/bin/env bash
# How a no-op `kiln plan` scales (issue 17): a generated factory of IMAGES
# images whose contexts hold FILES files in all (default 200 and 200,000),
# planned cold (the store has never seen the contexts: every file is read
# once) and warm (nothing changed: only metadata is read, per the rule in
# crates/kiln-build/src/statcache.rs), next to a plain `find | stat` walk of
# the same tree. Not a test: it prints a table (and writes
# bench/results-plan.md). No registry and no root needed.
#
#   bench/plan.sh [IMAGES] [FILES]
set -euo pipefail
cd "$(dirname "$0")/.."
images="${1:-200}"
files="${2:-200000}"
work="${KILN_BENCH_DIR:-/var/tmp/kiln-bench}/plan-$images-$files"
cargo build --release -q -p kiln-cli
kiln="$PWD/target/release/kiln"

if [ ! -f "$work/factory/kiln.toml" ]; then
  echo "generating $images images with $files files in $work" >&2
  rm -rf "$work" && mkdir -p "$work/factory"
  python3 - "$work/factory" "$images" "$files" <<'PY'
import os, sys
root, images, files = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
per = files // images
with open(os.path.join(root, "kiln.toml"), "w") as toml:
    toml.write("kiln = 1\n")
    for i in range(images):
        ctx = os.path.join(root, f"img{i:03}")
        for d in range(per // 100 + 1):
            os.makedirs(os.path.join(ctx, f"d{d:02}"), exist_ok=True)
        for f in range(per):
            with open(os.path.join(ctx, f"d{f // 100:02}", f"f{f:05}.txt"), "w") as out:
                out.write(f"image {i} file {f}\n" * (1 + f % 7))
        with open(os.path.join(ctx, "Dockerfile"), "w") as df:
            df.write("FROM scratch\nCOPY . /\n")
        toml.write(f"[image.img{i:03}]\ncontext = \"img{i:03}\"\n")
PY
fi
count=$(find "$work/factory" -type f | wc -l)
secs() { local s e; s=$(date +%s.%N); "$@" >/dev/null; e=$(date +%s.%N); echo "$e - $s" | bc; }
sync
echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
walk=$(secs sh -c "find '$work/factory' -type f -print0 | xargs -0 stat -c '%s %Y %i' >/dev/null")
rm -rf "$work/store"
cold=$(secs "$kiln" --store "$work/store" plan -f "$work/factory")
warm=$(secs "$kiln" --store "$work/store" plan -f "$work/factory")
warm2=$(secs "$kiln" --store "$work/store" plan -f "$work/factory")
{
  echo "# kiln plan at scale ($(date -u +%F), $(nproc) cores)"
  echo
  echo "$images images, $count files in their contexts (page cache warm except for the walk)."
  echo
  echo "| what | seconds | ratio to find+stat |"
  echo "|---|---|---|"
  echo "| find + stat of every file | $walk | 1.00 |"
  echo "| kiln plan, cold (every file read once) | $cold | $(echo "scale=2; $cold / $walk" | bc) |"
  echo "| kiln plan, warm (nothing changed) | $warm | $(echo "scale=2; $warm / $walk" | bc) |"
  echo "| kiln plan, warm again | $warm2 | $(echo "scale=2; $warm2 / $walk" | bc) |"
} | tee bench/results-plan.md

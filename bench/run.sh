#!/usr/bin/env bash
# kiln's benchmark harness (not part of the test suite): the same workloads,
# on the same machine, in one run, for kiln, buildah (chroot isolation, its
# own storage root) and BuildKit (the Docker engine's builder), interleaved,
# several repetitions. Prints a Markdown table of medians, spread and
# kiln-to-peer ratios, and writes it to bench/results.md.
#
#   bench/run.sh [REPETITIONS]        (default 3; as root on Debian 12)
#
# Status: workload 1 (the chain: cold, warm, one file changed) is
# implemented; the large COPY, multi-stage, publish and bake workloads and
# the hashing/compression floor are still to come (see issue 6).
set -euo pipefail
cd "$(dirname "$0")/.."
reps="${1:-3}"

need=()
for p in buildah:buildah docker.io:dockerd mmdebstrap:mmdebstrap time:/usr/bin/time; do
  command -v "${p#*:}" >/dev/null || need+=("${p%%:*}")
done
if [ ${#need[@]} -gt 0 ]; then
  apt-get update && apt-get install -y "${need[@]}"
fi
cargo build --release -q -p kiln-cli
kiln="$PWD/target/release/kiln"

work="${KILN_BENCH_DIR:-/var/tmp/kiln-bench}"
mkdir -p "$work"
export KILN_STORE="$work/kiln-store"
buildah_root="$work/buildah-root"
buildah=(buildah --root "$buildah_root" --runroot "$work/buildah-run" --storage-driver overlay)
# Debian's docker.io client: its classic `docker build` speaks to the
# engine's BuildKit with DOCKER_BUILDKIT=1, no buildx plugin needed.
docker=/usr/bin/docker
export BUILDAH_ISOLATION=chroot DOCKER_BUILDKIT=1
results="$work/times.tsv"
: >"$results"

if ! "$docker" info >/dev/null 2>&1; then
  dockerd --iptables=false --bridge=none >"$work/dockerd.log" 2>&1 &
  for _ in $(seq 100); do "$docker" info >/dev/null 2>&1 && break; sleep 0.2; done
fi

# The shared base: Debian bookworm minbase, made once, imported into each.
if [ ! -f "$work/base/rootfs.tar" ]; then
  mkdir -p "$work/base"
  mmdebstrap --variant=minbase --quiet bookworm "$work/base/rootfs.tar"
fi
printf 'FROM scratch\nADD rootfs.tar /\nCMD ["bash"]\n' >"$work/base/Dockerfile"
"$kiln" build -t bench/base:1 "$work/base" >/dev/null
"$kiln" save bench/base:1 --format oci -o "$work/base-oci.tar"
"$kiln" save bench/base:1 --format docker -o "$work/base-docker.tar"
"${buildah[@]}" tag "$("${buildah[@]}" pull -q "oci-archive:$work/base-oci.tar")" bench/base:1
"$docker" load -q -i "$work/base-docker.tar" >/dev/null

# Workload 1: a chain. tools installs packages with apt-get; three
# applications on tools each copy ~1000 small files and run a script.
chain="$work/chain"
rm -rf "$chain"
mkdir -p "$chain/tools"
printf 'FROM bench/base:1\nRUN apt-get update && apt-get install -y --no-install-recommends jq tree less && rm -rf /var/lib/apt/lists/*\n' >"$chain/tools/Dockerfile"
for app in a b c; do
  d="$chain/app-$app"
  mkdir -p "$d/files"
  for i in $(seq 1000); do echo "$app file $i" >"$d/files/f$i.txt"; done
  printf 'FROM bench/tools:1\nCOPY files /srv/files\nRUN find /srv/files -type f | wc -l > /srv/count && jq -n "{app: \\"%s\\"}" > /srv/app.json\n' "$app" >"$d/Dockerfile"
done

timed() { # timed TOOL WORKLOAD REP COMMAND...
  local tool=$1 workload=$2 rep=$3 secs kb
  shift 3
  if ! /usr/bin/time -o "$work/time.out" -f '%e %M' "$@" >/dev/null 2>"$work/last.err"; then
    echo "FAILED: $tool, $workload" >&2
    tail -20 "$work/last.err" >&2
    return 1
  fi
  read -r secs kb <"$work/time.out"
  printf '%s\t%s\t%s\t%s\t%s\n' "$tool" "$workload" "$rep" "$secs" "$kb" >>"$results"
  echo "$tool, $workload, run $rep: ${secs}s, peak ${kb} KiB"
}

build_chain() { # build_chain TOOL
  case $1 in
    kiln)
      "$kiln" build -t bench/tools:1 "$chain/tools"
      for app in a b c; do "$kiln" build -t "bench/app-$app:1" "$chain/app-$app"; done ;;
    buildah)
      "${buildah[@]}" build --pull-never --layers -t bench/tools:1 "$chain/tools"
      for app in a b c; do "${buildah[@]}" build --pull-never --layers -t "bench/app-$app:1" "$chain/app-$app"; done ;;
    buildkit)
      "$docker" build -q --network host -t bench/tools:1 "$chain/tools"
      for app in a b c; do "$docker" build -q --network host -t "bench/app-$app:1" "$chain/app-$app"; done ;;
  esac
}

reset_cache() { # reset_cache TOOL: forget everything but the base
  case $1 in
    kiln)
      for n in tools app-a app-b app-c; do "$kiln" rmi "bench/$n:1" >/dev/null 2>&1 || true; done
      "$kiln" prune >/dev/null
      rm -rf "$KILN_STORE/cache" && mkdir -p "$KILN_STORE/cache" ;;
    buildah)
      for n in tools app-a app-b app-c; do "${buildah[@]}" rmi -f "bench/$n:1" >/dev/null 2>&1 || true; done
      "${buildah[@]}" rmi --prune >/dev/null 2>&1 || true ;;
    buildkit)
      for n in tools app-a app-b app-c; do "$docker" rmi -f "bench/$n:1" >/dev/null 2>&1 || true; done
      "$docker" builder prune -af >/dev/null ;;
  esac
}

export -f build_chain
export kiln chain
for rep in $(seq "$reps"); do
  for tool in kiln buildah buildkit; do
    reset_cache "$tool"
    timed "$tool" "chain cold" "$rep" bash -c "$(declare -p buildah docker); $(declare -f build_chain); build_chain $tool"
    timed "$tool" "chain warm (no change)" "$rep" bash -c "$(declare -p buildah docker); $(declare -f build_chain); build_chain $tool"
    echo "change $rep" >"$chain/app-b/files/f1.txt"
    timed "$tool" "chain, one app file changed" "$rep" bash -c "$(declare -p buildah docker); $(declare -f build_chain); build_chain $tool"
    echo "b file 1" >"$chain/app-b/files/f1.txt"
  done
done

python3 "$(dirname "$0")/table.py" "$results" | tee bench/results.md

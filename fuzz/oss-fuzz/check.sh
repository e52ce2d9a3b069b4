#!/bin/bash
# Builds every fuzzer as OSS-Fuzz would (build.sh beside this file, clang-14,
# libFuzzer, ASan+UBSan with OSS-Fuzz's base-builder flags) and runs each
# over its seed corpus zip once: the proof that the OSS-Fuzz build works.
# Needs clang-14 and libclang-rt-14-dev (tools/debian-packages.txt); exits 77
# without them. tools/oss-fuzz-local installs what is missing and runs this;
# CTest runs it as fuzz.oss_fuzz_build.
#   fuzz/oss-fuzz/check.sh OUT_DIR BUILD_DIR
set -euo pipefail
src=$(cd "$(dirname "$0")/../.." && pwd)
log() { printf '[oss-fuzz-check] %s\n' "$*" >&2; }
(($# == 2)) || { log "usage: $0 OUT_DIR BUILD_DIR"; exit 2; }
command -v clang++-14 >/dev/null || { log "clang++-14 not found: skipped"; exit 77; }
export OUT=$1 VHU_OSSFUZZ_BUILD=$2 VHU_SRC=$src SRC=$src/..
export CC=clang-14 CXX=clang++-14
export LIB_FUZZING_ENGINE=-fsanitize=fuzzer
# What OSS-Fuzz's base-builder sets for the address and undefined sanitizers.
san="-O1 -fno-omit-frame-pointer -gline-tables-only -fsanitize=address,undefined -fsanitize-address-use-after-scope"
san+=" -fno-sanitize-recover=undefined -fsanitize=fuzzer-no-link"
export CFLAGS="$san" CXXFLAGS="$san"
rm -rf "$OUT"
mkdir -p "$OUT"
# As OSS-Fuzz's `compile` runs it.
bash -eu "$src/fuzz/oss-fuzz/build.sh"
status=0
for opts in "$src"/fuzz/*.options; do
  t=$(basename "$opts" .options)
  for f in "$t" "$t.dict" "$t.options" "${t}_seed_corpus.zip"; do
    [[ -e "$OUT/$f" ]] || { log "missing: $OUT/$f"; status=1; }
  done
  [[ -x "$OUT/$t" && -e "$OUT/${t}_seed_corpus.zip" ]] || continue
  seeds=$(mktemp -d)
  python3 -m zipfile -e "$OUT/${t}_seed_corpus.zip" "$seeds"
  if "$OUT/$t" -runs=0 "$seeds" >"$seeds.log" 2>&1; then
    log "$t: $(grep -o 'INITED.*' "$seeds.log" | head -1)"
  else
    log "$t: FAILED on its seed corpus:"
    tail -20 "$seeds.log" >&2
    status=1
  fi
  rm -rf "$seeds" "$seeds.log"
done
exit $status

#!/bin/bash -eu
# OSS-Fuzz build script: uses $CC, $CXX, $CFLAGS, $CXXFLAGS, $LIB_FUZZING_ENGINE
# and $OUT as OSS-Fuzz sets them (check.sh beside it sets them here).
# Every fuzzer goes to $OUT with its .dict, .options and a seed corpus zip of
# corpus/<target> and corpus/regressions/<target>.
# -eu again, for a caller that runs `bash build.sh`, which ignores the #! line:
# a failed build would otherwise leave the last good binaries to be copied.
set -eu
src=${VHU_SRC:-$SRC/vhost-user-conformance}
build=${VHU_OSSFUZZ_BUILD:-$src/build-ossfuzz}
targets=()
for opts in "$src"/fuzz/*.options; do
  targets+=("$(basename "$opts" .options)")
done
cmake -S "$src" -B "$build" -G Ninja \
  -DCMAKE_C_COMPILER="$CC" -DCMAKE_CXX_COMPILER="$CXX" \
  -DCMAKE_C_FLAGS="$CFLAGS" -DCMAKE_CXX_FLAGS="$CXXFLAGS" \
  -DVHU_FUZZ=ON -DVHU_FUZZ_INSTRUMENT=OFF -DVHU_FUZZ_ENGINE="$LIB_FUZZING_ENGINE" -DVHU_TESTS=OFF
cmake --build "$build" --target "${targets[@]/#/fuzz_}"
for target in "${targets[@]}"; do
  cp "$build/bin/fuzz_$target" "$OUT/$target"
  cp "$src/fuzz/$target.dict" "$src/fuzz/$target.options" "$OUT/"
  rm -f "$OUT/${target}_seed_corpus.zip"
  (cd "$src/corpus" && find "$target" "regressions/$target" -type f ! -name '.*' -print0 |
    xargs -0 -r zip -q -j "$OUT/${target}_seed_corpus.zip")
done

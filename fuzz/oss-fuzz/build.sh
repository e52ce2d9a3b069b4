#!/bin/bash -eu
# OSS-Fuzz build script: uses $CC, $CXX, $CFLAGS, $CXXFLAGS, $LIB_FUZZING_ENGINE
# and $OUT as OSS-Fuzz sets them (tools/oss-fuzz-local sets them here).
src=${VHU_SRC:-$SRC/vhost-user-conformance}
build=${VHU_OSSFUZZ_BUILD:-$src/build-ossfuzz}
cmake -S "$src" -B "$build" -G Ninja \
  -DCMAKE_C_COMPILER="$CC" -DCMAKE_CXX_COMPILER="$CXX" \
  -DCMAKE_C_FLAGS="$CFLAGS" -DCMAKE_CXX_FLAGS="$CXXFLAGS" \
  -DVHU_FUZZ=ON -DVHU_FUZZ_INSTRUMENT=OFF -DVHU_FUZZ_ENGINE="$LIB_FUZZING_ENGINE" -DVHU_TESTS=OFF
cmake --build "$build"
for bin in "$build"/bin/fuzz_*; do
  target=$(basename "$bin")
  target=${target#fuzz_}
  cp "$bin" "$OUT/$target"
  for f in "$src/fuzz/$target.dict" "$src/fuzz/$target.options"; do
    [[ -f "$f" ]] && cp "$f" "$OUT/"
  done
  (cd "$src/corpus" && zip -q -r -j "$OUT/${target}_seed_corpus.zip" "$target" "regressions/$target" || true)
done

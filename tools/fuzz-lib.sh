# Shared by tools/fuzz-bench, tools/coverage and tools/oss-fuzz-local.
# shellcheck shell=bash
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

VHU_FUZZ_TARGETS=(vhost_user_messages vhost_user_socket vring vsock_packets device_state_load command_line backend_replies)

# Installs the named Debian packages that are missing. What only these tools
# need (afl++, gcovr) is installed here on demand and not listed in
# debian-packages.txt; clang-14 and libclang-rt-14-dev are listed there, since
# CI builds the fuzzers as OSS-Fuzz does (fuzz.oss_fuzz_build).
vhu_fuzz_install() {
  local missing=() pkg
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  ((${#missing[@]} == 0)) && return 0
  local sudo=""
  [[ $(id -u) -ne 0 ]] && sudo="sudo"
  vhu_log "installing: ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# Configures and builds the fuzz targets in DIR with the given cmake options.
#   vhu_fuzz_build DIR [cmake options...]
vhu_fuzz_build() {
  local dir=$1
  shift
  local launcher=()
  command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_C_COMPILER_LAUNCHER=ccache)
  cmake -S "$VHU_ROOT" -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DVHU_TESTS=OFF "${launcher[@]}" "$@" >/dev/null
  cmake --build "$dir" -j "$(nproc)" --target "${VHU_FUZZ_TARGETS[@]/#/fuzz_}"
}

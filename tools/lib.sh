# Shared by tools/test and tools/conform: install what is missing, configure, build.
# shellcheck shell=bash

VHU_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VHU_BUILD=${VHU_BUILD_DIR:-$VHU_ROOT/build}

vhu_log() { printf '[%s] %s\n' "$(basename "$0")" "$*" >&2; }

# Installs the Debian packages of tools/debian-packages.txt that are not installed yet.
vhu_install_packages() {
  local list="$VHU_ROOT/tools/debian-packages.txt" missing=() pkg
  while read -r pkg; do
    [[ -z "$pkg" || "$pkg" == \#* ]] && continue
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done <"$list"
  ((${#missing[@]} == 0)) && return 0
  local sudo=""
  [[ $(id -u) -ne 0 ]] && sudo="sudo"
  vhu_log "installing: ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# Configures and builds with ASan+UBSan and warnings as errors: the one build
# both commands share, so the suite runs the very binaries the tests checked.
vhu_build() {
  # -g1, line tables only: sanitizer reports keep their file:line, and the
  # build takes a quarter less time than with full debug information.
  cmake -S "$VHU_ROOT" -B "$VHU_BUILD" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O2 -g1 -DNDEBUG" -DCMAKE_C_FLAGS_RELWITHDEBINFO="-O2 -g1 -DNDEBUG" \
    -DVHU_SANITIZE=ON -DVHU_WERROR=ON >/dev/null
  cmake --build "$VHU_BUILD" -j "$(nproc)"
}

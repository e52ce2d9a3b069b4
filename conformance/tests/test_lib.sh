# Sourced by the integration test scripts that check several things and
# report every failure before they exit: `problem` records one and lets the
# script go on; the script ends with `exit $status`.
status=0
problem() {
  echo "FAIL: $*"
  status=1
}

# require_built PATH...: exit 77 (CTest's skip) unless every binary is built.
require_built() {
  local b
  for b in "$@"; do
    if [[ ! -x "$b" ]]; then
      echo "not built: $b"
      exit 77
    fi
  done
}

# fresh_dir DIR: DIR, emptied of what an earlier run left.
fresh_dir() {
  rm -rf "$1"
  mkdir -p "$1"
}

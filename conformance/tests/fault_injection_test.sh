#!/usr/bin/env bash
# For every fault of the faulty back-end, the suite must report exactly the
# failing cases listed in fault_expectations.txt, and nothing else.
#   fault_injection_test.sh RUNNER EXPECTATIONS OUT_DIR
set -uo pipefail
runner=$1 table=$2 out=$3
faulty="$(dirname "$runner")/vhost-user-vsock-faulty"
if [[ ! -x "$faulty" ]]; then
  echo "faulty back-end not built ($faulty)"
  exit 77
fi
mkdir -p "$out"
status=0
# Faults the back-end knows (it lists them with --list-faults) must all be in the table.
if known=$("$faulty" --list-faults 2>/dev/null); then
  for f in $known; do
    grep -qE "^$f[[:space:]]*:" "$table" || { echo "fault $f has no line in $table"; status=1; }
  done
fi
all_cases=$("$runner" --list | awk '{print $1}' | sort)
# One id per line; '*' and '?*' expand to every case.
expand_ids() {
  local t
  set -f
  for t in $1; do
    case $t in
      '*') echo "$all_cases" ;;
      '?*') echo "$all_cases" | sed 's/^/?/' ;;
      *) echo "$t" ;;
    esac
  done
  set +f
}
while IFS= read -r line; do
  line=${line%%#*}
  [[ -z "${line// /}" ]] && continue
  fault=${line%%:*}
  fault=${fault// /}
  # A bare id must fail; an id with a leading '?' may fail too (collateral
  # damage whose timing the fault does not control); nothing else may fail.
  # '*' stands for every case: a fault that breaks the handshake fails all.
  ids=$(expand_ids "${line#*:}")
  want=$(echo "$ids" | grep -v '^?' | sort -u)
  maybe=$(echo "$ids" | grep '^?' | sed 's/^?//' | sort -u)
  report="$out/fault-$fault.xml"
  "$runner" --spawn "$faulty --fault $fault --socket {socket} --uds-path {uds} --guest-cid {cid}" \
    --jobs 2 --no-progress --junit "$report" >"$out/fault-$fault.log" 2>&1
  rc=$?
  got=$(python3 - "$report" <<'PY'
import sys, xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
for tc in root.iter("testcase"):
    if tc.find("failure") is not None or tc.find("error") is not None:
        print(tc.get("classname").split(".")[-1] + "." + tc.get("name"))
PY
  )
  got=$(echo "$got" | grep -v '^$' | sort)
  missing=$(comm -23 <(echo "$want") <(echo "$got") | grep -v '^$')
  extra=$(comm -13 <(printf '%s\n' "$want" "$maybe" | sort -u) <(echo "$got") | grep -v '^$')
  if [[ -n "$missing" || -n "$extra" ]]; then
    echo "FAULT $fault (exit $rc):"
    [[ -n "$missing" ]] && echo "  expected to fail but passed:" && echo "$missing" | sed 's/^/    /'
    [[ -n "$extra" ]] && echo "  failed but not listed:" && echo "$extra" | sed 's/^/    /'
    status=1
  else
    echo "ok   $fault: $(echo $want | tr '\n' ' ')"
  fi
done <"$table"
exit $status

#!/usr/bin/env bash
# For every line of fault_expectations.txt, the suite run against the faulty
# back-end with that fault must report exactly the failing cases the line
# lists, and nothing else, and skip the cases it says must skip. Then every
# case must be a must-fail of at least one fault that is not broad: a case no
# fault can make fail proves nothing.
# The file's header documents the syntax.
#   fault_injection_test.sh RUNNER EXPECTATIONS OUT_DIR [PARALLEL [JOBS]]
# PARALLEL (default 2) fault runs go at once, each with --jobs JOBS (default
# 4): the cases spend most of their time waiting (quiet windows, timeouts),
# not computing, so 8 at a time keep 2 cores busy without starving any.
# FAULT_FILTER=REGEX in the environment runs only the lines of the faults it
# matches (the static checks still cover the whole file).
set -uo pipefail
runner=$1 table=$2 out=$3 parallel=${4:-2} jobs=${5:-4}
faulty="$(dirname "$runner")/vhost-user-vsock-faulty"
if [[ ! -x "$faulty" ]]; then
  echo "faulty back-end not built ($faulty)"
  exit 77
fi
mkdir -p "$out"
# OUT_DIR is shared (CTest passes the build directory): only our own files go.
rm -f "$out"/line-*.txt "$out"/line-*.xml "$out"/line-*.log
status=0
problem() {
  echo "$*"
  status=1
}

# The test must not pass vacuously: no fault list, no cases, no lines.
if ! known=$("$faulty" --list-faults) || [[ -z "$known" ]]; then
  echo "$faulty --list-faults failed or listed nothing"
  exit 1
fi
if ! all_cases=$("$runner" --list | awk '{print $1}' | sort -u) || [[ -z "$all_cases" ]]; then
  echo "$runner --list failed or listed nothing"
  exit 1
fi

# Directives and fault lines, comments and blank lines dropped.
allow_uncovered="" allow_empty=""
declare -a l_fault l_broad l_args l_want l_maybe l_skip l_text
n=0
while IFS= read -r raw; do
  line=${raw%%#*}
  [[ -z "${line// /}" ]] && continue
  if [[ "$line" != *:* ]]; then
    problem "no ':' in line: $raw"
    continue
  fi
  head=${line%%:*}
  ids=${line#*:}
  read -r -a words <<<"$head"
  if ((${#words[@]} == 0)); then
    problem "no fault name in line: $raw"
    continue
  fi
  case ${words[0]} in
    allow-uncovered) allow_uncovered+=" $ids"; continue ;;
    allow-empty) allow_empty+=" $ids"; continue ;;
  esac
  fault=${words[0]}
  # What is between the name and the colon: [broad] and runner options.
  opts="${words[*]:1}"
  broad=0 args=""
  if [[ -n "$opts" ]]; then
    if [[ "$opts" != \[*\] ]]; then
      problem "line for $fault: '$opts' must be written in [brackets]"
      continue
    fi
    opts=${opts#[}
    opts=${opts%]}
    for w in $opts; do
      if [[ "$w" == broad ]]; then broad=1; else args+=" $w"; fi
    done
  fi
  grep -qxF "$fault" <<<"$known" || problem "line for $fault: the faulty back-end has no such fault"
  want="" maybe="" unless="" skips=""
  set -f
  for t in $ids; do
    case $t in
      '*') want+=$'\n'"$all_cases" ;;
      '?*') maybe+=$'\n'"$all_cases" ;;
      '?'*) maybe+=$'\n'"${t#?}" ;;
      '!'*) unless+=$'\n'"${t#!}" ;;
      '~'*) skips+=$'\n'"${t#\~}" ;;
      *) want+=$'\n'"$t" ;;
    esac
    if [[ "$t" == '*' || "$t" == '?*' || "$t" == '!'* ]] && ((!broad)); then
      problem "line for $fault: '$t' needs [broad]"
    fi
    id=${t#[?!~]}
    if [[ "$id" != '*' ]] && ! grep -qxF "$id" <<<"$all_cases"; then
      problem "line for $fault: '$id' is not a case of $runner --list"
    fi
  done
  set +f
  want=$(comm -23 <(grep -v '^$' <<<"$want" | sort -u) <(grep -v '^$' <<<"$unless" | sort -u))
  maybe=$(grep -v '^$' <<<"$maybe" | sort -u)
  skips=$(grep -v '^$' <<<"$skips" | sort -u)
  l_fault[n]=$fault l_broad[n]=$broad l_args[n]=$args l_want[n]=$want l_maybe[n]=$maybe l_skip[n]=$skips
  l_text[n]="$fault${args:+ [${args# }]}"
  n=$((n + 1))
done <"$table"
((n > 0)) || problem "no fault lines in $table"

allowed() { # ID LIST
  local x
  for x in $2; do [[ "$x" == "$1" ]] && return 0; done
  return 1
}

for f in $known; do
  seen=0
  for ((i = 0; i < n; i++)); do [[ "${l_fault[i]}" == "$f" ]] && seen=1; done
  ((seen)) || problem "fault $f has no line in $table"
done
for ((i = 0; i < n; i++)); do
  if [[ -z "${l_want[i]}" && -z "${l_skip[i]}" ]] && ! allowed "${l_fault[i]}" "$allow_empty"; then
    problem "${l_text[i]}: no case must fail or skip (a line that expects nothing proves nothing; see allow-empty)"
  fi
done

# One line: run the suite, compare, write the verdict to $out/line-I.txt.
run_line() {
  # The options are split into words below, never globbed ("--filter program.*").
  local -
  set -f
  local i=$1 f=${l_fault[$1]} base="$out/line-$1-${l_fault[$1]}"
  local t0=$SECONDS spec=upstream
  # The back-end follows the same spec text as the runner.
  [[ " ${l_args[i]} " =~ \ --spec\ ([a-z]+)\  ]] && spec=${BASH_REMATCH[1]}
  # The cases that need a sibling VM get the same fault in a two-VM back-end.
  local vms="--vm guest-cid={cid},socket={socket},uds-path={uds},groups=g"
  vms+=" --vm guest-cid={cid2},socket={socket2},uds-path={uds2},groups=g"
  # shellcheck disable=SC2086  # the options are words on purpose
  "$runner" --spawn "$faulty --fault $f --spec $spec --socket {socket} --uds-path {uds} --guest-cid {cid}" \
    --spawn-siblings "$faulty --fault $f --spec $spec $vms" \
    --jobs "$jobs" --no-progress --junit "$base.xml" ${l_args[i]} >"$base.log" 2>&1
  local rc=$?
  local verdicts got skipped
  # One line per case that did not pass: "F id" (failure or error) or "S id".
  verdicts=$(python3 - "$base.xml" <<'PY'
import sys, xml.etree.ElementTree as ET
try:
    root = ET.parse(sys.argv[1]).getroot()
except (OSError, ET.ParseError) as e:
    sys.exit(f"no usable JUnit report: {e}")
for tc in root.iter("testcase"):
    case = tc.get("classname").split(".")[-1] + "." + tc.get("name")
    if tc.find("failure") is not None or tc.find("error") is not None:
        print("F", case)
    elif tc.find("skipped") is not None:
        print("S", case)
PY
  ) || rc=3
  got=$(awk '$1 == "F" {print $2}' <<<"$verdicts" | sort -u)
  skipped=$(awk '$1 == "S" {print $2}' <<<"$verdicts" | sort -u)
  local missing extra unskipped
  missing=$(comm -23 <(echo "${l_want[i]}") <(echo "$got") | grep -v '^$')
  extra=$(comm -13 <(printf '%s\n' "${l_want[i]}" "${l_maybe[i]}" | sort -u) <(echo "$got") | grep -v '^$')
  unskipped=$(comm -23 <(echo "${l_skip[i]}") <(echo "$skipped") | grep -v '^$')
  {
    if [[ $rc -ne 0 && $rc -ne 1 ]] || [[ -n "$missing" || -n "$extra" || -n "$unskipped" ]]; then
      echo "FAULT ${l_text[i]} (exit $rc, $((SECONDS - t0)) s, log $base.log):"
      [[ $rc -ne 0 && $rc -ne 1 ]] && echo "  the runner did not complete a run (exit $rc)"
      [[ -n "$missing" ]] && echo "  expected to fail but passed:" && sed 's/^/    /' <<<"$missing"
      [[ -n "$extra" ]] && echo "  failed but not listed:" && sed 's/^/    /' <<<"$extra"
      [[ -n "$unskipped" ]] && echo "  expected to skip but did not:" && sed 's/^/    /' <<<"$unskipped"
    else
      local said
      said=$(echo ${l_want[i]} ${l_skip[i]:+skipped: ${l_skip[i]}})
      echo "ok   ${l_text[i]} ($((SECONDS - t0)) s): $said"
    fi
  } >"$out/line-$i.txt"
}

# The slowest lines go first so that they overlap the quick ones: a failing
# case often waits out a timeout, so the more cases a line lets fail, the
# longer its run.
mapfile -t order < <(for ((i = 0; i < n; i++)); do
  [[ -n "${FAULT_FILTER:-}" && ! "${l_fault[i]}" =~ ^(${FAULT_FILTER})$ ]] && continue
  echo "$(($(wc -w <<<"${l_want[i]} ${l_maybe[i]}") + 200 * l_broad[i])) $i"
done | sort -k1,1nr | awk '{print $2}')
running=0
for i in "${order[@]}"; do
  if ((running >= parallel)); then
    wait -n
    running=$((running - 1))
  fi
  run_line "$i" &
  running=$((running + 1))
done
wait
for i in $(printf '%s\n' "${order[@]}" | sort -n); do
  if [[ ! -s "$out/line-$i.txt" ]]; then
    problem "FAULT ${l_text[i]}: no verdict"
    continue
  fi
  cat "$out/line-$i.txt"
  grep -q '^FAULT' "$out/line-$i.txt" && status=1
done

# Coverage: each case fails under some fault that breaks its rule and not
# everyone else's.
covered=""
for ((i = 0; i < n; i++)); do ((l_broad[i])) || covered+=$'\n'"${l_want[i]}"; done
covered=$(grep -v '^$' <<<"$covered" | sort -u)
uncovered=$(comm -23 <(echo "$all_cases") <(echo "$covered") | grep -v '^$')
for id in $uncovered; do
  allowed "$id" "$allow_uncovered" && continue
  problem "case $id fails under no fault that is not [broad]: add a fault that breaks its rule"
done
for id in $allow_uncovered; do
  if grep -qxF "$id" <<<"$covered"; then
    echo "note: allow-uncovered lists $id, which a fault now covers: remove it"
  elif ! grep -qxF "$id" <<<"$all_cases"; then
    echo "note: allow-uncovered lists $id, which is not a case (yet)"
  fi
done
for f in $allow_empty; do
  for ((i = 0; i < n; i++)); do
    [[ "${l_fault[i]}" == "$f" && -n "${l_want[i]}" ]] &&
      echo "note: allow-empty lists $f, whose line now has cases: remove it"
  done
done
echo "$n fault lines, $(wc -w <<<"$covered") of $(wc -w <<<"$all_cases") cases covered by targeted faults"
exit $status

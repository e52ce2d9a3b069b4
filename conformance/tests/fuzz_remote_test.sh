#!/usr/bin/env bash
# vhost-user-conform --fuzz and --replay against back-ends whose faults are
# known, so the fuzzer must find them, and against the reference back-end,
# where it must find nothing.
#   fuzz_remote_test.sh RUNNER CORPUS_DIR OUT_DIR MODE
# MODE:
#   crash       --fault crash_on_bad_descriptor: a crash within a bounded
#               number of runs of a fixed --seed; --replay reproduces it
#   unanswered  --fault ignore_need_reply and --fault no_reply_unready_ring:
#               a request left unanswered; --replay reproduces it
#   hang        --fault hang_on_truncated_header: once a mutant cuts a
#               message short and hangs up inside it, the back-end serves
#               no new connection; --replay reproduces it
#   reference   the reference back-end: a short run finds nothing, and every
#               seed of the corpus replays without a finding
set -uo pipefail
. "$(dirname "$0")/test_lib.sh"
runner=$1 corpus=$2 out=$3 mode=$4
bindir=$(dirname "$runner")
faulty="$bindir/vhost-user-vsock-faulty"
ref="$bindir/vhost-user-vsock-ref"
require_built "$faulty" "$ref"
work="$out/fuzz-remote-$mode"
fresh_dir "$work"

spawn_faulty() { echo "$faulty --fault $1 --socket {socket} --uds-path {uds} --guest-cid {cid}"; }

# expect_finding FAULT KIND FUZZ-ARGS...: the run stops at its first finding,
# of kind KIND, reproduced, and --replay of the file reproduces it again.
expect_finding() {
  local fault=$1 kind=$2
  shift 2
  local dir="$work/$fault"
  "$runner" --spawn "$(spawn_faulty "$fault")" --fuzz --fuzz-out "$dir" --fuzz-max-findings 1 --no-progress "$@" \
    >"$dir.log" 2>&1
  local rc=$?
  if ((rc != 1)); then
    problem "--fault $fault: --fuzz exited $rc, want 1 (a finding)"
    tail -20 "$dir.log"
    return
  fi
  local files=("$dir/$kind"-????????????????)
  if [[ ! -f "${files[0]}" ]]; then
    problem "--fault $fault: no $kind-* finding in $dir: $(ls "$dir")"
    tail -20 "$dir.log"
    return
  fi
  local f=${files[0]}
  grep -q '^reproduced: yes' "$f.txt" || problem "--fault $fault: $f.txt does not say it reproduced"
  "$runner" --spawn "$(spawn_faulty "$fault")" --replay "$f" >"$dir.replay.log" 2>&1
  rc=$?
  if ((rc != 1)); then
    problem "--fault $fault: --replay $f exited $rc, want 1 (reproduced)"
    cat "$dir.replay.log"
    return
  fi
  grep -q ": $kind: " "$dir.replay.log" || problem "--fault $fault: --replay did not report a $kind finding"
  echo "ok: --fault $fault: $(grep -m1 'FINDING' "$dir.log")"
}

case $mode in
  crash)
    # Rings set up and packets poked into guest RAM: a mutated descriptor
    # soon points outside guest memory.
    expect_finding crash_on_bad_descriptor crash --seed 1 --fuzz-runs 400 \
      --corpus "$corpus/vhost_user_messages/seed-start-datapath-stop"
    ;;
  unanswered)
    expect_finding ignore_need_reply unanswered --seed 1 --fuzz-runs 100 \
      --corpus "$corpus/vhost_user_messages/seed-start-datapath-stop"
    # A disconnect inserted before the rings are set up again leaves a
    # GET_VRING_BASE for a ring that is not ready.
    expect_finding no_reply_unready_ring unanswered --seed 1 --fuzz-runs 300 \
      --corpus "$corpus/vhost_user_messages/trace-qemu-7.2-vhost-user-vsock-boot"
    ;;
  hang)
    expect_finding hang_on_truncated_header hang --seed 1 --fuzz-runs 300 \
      --corpus "$corpus/vhost_user_messages/seed-start-datapath-stop"
    ;;
  reference)
    "$runner" --profile ref --fuzz --seed 1 --fuzz-runs 150 --fuzz-out "$work/findings" --no-progress \
      --corpus "$corpus/vhost_user_messages" >"$work/fuzz.log" 2>&1
    rc=$?
    if ((rc != 0)); then
      problem "reference back-end: --fuzz exited $rc, want 0"
      tail -30 "$work/fuzz.log"
      for t in "$work"/findings/*.txt; do [[ -f $t ]] && head -5 "$t"; done
    else
      echo "ok: reference back-end: $(tail -2 "$work/fuzz.log" | head -1)"
    fi
    "$runner" --profile ref --replay "$corpus/vhost_user_messages" "$corpus/regressions/vhost_user_messages" \
      >"$work/replay.log" 2>&1
    rc=$?
    if ((rc != 0)); then
      problem "reference back-end: --replay of the corpus exited $rc, want 0"
      tail -30 "$work/replay.log"
    else
      echo "ok: reference back-end: $(tail -1 "$work/replay.log")"
    fi
    ;;
  *)
    echo "unknown mode $mode"
    exit 2
    ;;
esac
exit $status

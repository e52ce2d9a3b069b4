#!/usr/bin/env bash
# --record-corpus: each case that talked to the back-end leaves one input in
# the vhost_user_messages framing, a two-VM case one per VM; every input
# replays through the in-process fuzz target and, over the socket, against
# the reference back-end without a finding.
#   record_corpus_test.sh RUNNER FUZZ_TARGET OUT_DIR
set -uo pipefail
. "$(dirname "$0")/test_lib.sh"
runner=$1 target=$2 out=$3
require_built "$(dirname "$runner")/vhost-user-vsock-ref"
work="$out/record-corpus"
fresh_dir "$work"

cases=(handshake.set_owner handshake.reply_header vsock.sibling_stream)
filters=()
for c in "${cases[@]}"; do filters+=(--filter "$c"); done
if ! "$runner" --profile ref --no-progress --record-corpus "$work/rec" "${filters[@]}" >"$work/run.log" 2>&1; then
  tail -30 "$work/run.log"
  problem "the cases did not pass against the reference back-end"
fi
dir="$work/rec/vhost_user_messages"
for c in "${cases[@]}"; do
  [[ -s "$dir/case-$c" ]] || problem "no input recorded for $c"
done
[[ -s "$dir/case-vsock.sibling_stream-vm2" ]] || problem "no input recorded for the second VM of vsock.sibling_stream"
n=$(find "$dir" -type f | wc -l)
((n == ${#cases[@]} + 1)) || problem "$n inputs recorded, want $((${#cases[@]} + 1)): $(ls "$dir")"

"$target" "$dir" >"$work/target.log" 2>&1 || {
  tail -20 "$work/target.log"
  problem "the recorded inputs do not replay through $(basename "$target")"
}
"$runner" --profile ref --replay "$dir" >"$work/replay.log" 2>&1 || {
  tail -20 "$work/replay.log"
  problem "--replay of the recorded inputs against the reference back-end found something"
}
((status == 0)) && echo "recorded and replayed: $(ls "$dir" | tr '\n' ' ')"
exit $status

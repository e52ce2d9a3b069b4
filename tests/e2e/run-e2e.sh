#!/usr/bin/env bash
# Real-guest end-to-end test: a Debian kernel boots under QEMU (TCG) with
# -device vhost-user-vsock-pci served by a vhost-user vsock back-end; a static
# guest program and a host peer move 64 MiB each way, open 100 connections in a
# row, do one SEQPACKET exchange, and reset the guest's vsock driver with a
# connection open (steps in common/e2e_proto.h).
#
# usage: run-e2e.sh --backend PATH --guest PATH --host PATH [--workdir DIR]
#                   [--timeout S] [--size BYTES] [--steps g2h,h2g,many,seq,trickle,seqtrickle,reset] [--stop-cont]
#
# --stop-cont: pause and resume the VM through the HMP monitor (stop-cont.py)
# again and again while the guest program runs: every vhost-user stop/start
# then happens in the middle of real traffic, and the data must still arrive
# intact, in order, exactly once.
#
# Environment:
#   E2E_KERNEL       vmlinuz to boot (default: newest /boot/vmlinuz-* with /lib/modules/<ver>/modules.dep)
#   E2E_QEMU         QEMU binary (default qemu-system-x86_64)
#   E2E_QEMU_ARGS    extra QEMU arguments (e.g. "-L PREFIX/usr/share/qemu -L PREFIX/usr/share/seabios"
#                    for an unpacked QEMU 10, see ../shared/traces/README.md)
#   E2E_BACKEND_CMD  command template for another back-end, with {socket} {uds} {cid}
#                    (default: "<--backend> --socket {socket} --uds-path {uds} --guest-cid {cid}")
#   E2E_SIZE, E2E_TIMEOUT, E2E_STEPS   defaults for --size, --timeout, --steps
#
# Exit: 0 every step passed on both sides; 77 skipped (no QEMU or no kernel); 1 otherwise.
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
backend="" guest="" host="" workdir="" timeout=${E2E_TIMEOUT:-300} size=${E2E_SIZE:-67108864}
steps=${E2E_STEPS:-g2h,h2g,many,seq,trickle,seqtrickle,reset}
stop_cont=0
while (($#)); do
  case "$1" in
    --stop-cont) stop_cont=1; shift; continue ;;
    --backend) backend=$2 ;;
    --guest) guest=$2 ;;
    --host) host=$2 ;;
    --workdir) workdir=$2 ;;
    --timeout) timeout=$2 ;;
    --size) size=$2 ;;
    --steps) steps=$2 ;;
    -h | --help) sed -n '2,24p' "$0"; exit 0 ;;
    *) echo "run-e2e.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift 2
done

log() { printf '[e2e %6.1fs] %s\n' "$(($(date +%s%N) - t_start))e-9" "$*"; }
t_start=$(date +%s%N)
skip() { log "SKIP: $*"; exit 77; }
fail_setup() { log "FAIL: $*"; exit 1; }

# --- prerequisites -----------------------------------------------------------
qemu=${E2E_QEMU:-qemu-system-x86_64}
command -v "$qemu" >/dev/null || skip "$qemu not found (Debian package qemu-system-x86)"
if [[ -n "${E2E_KERNEL:-}" ]]; then
  kernel=$E2E_KERNEL
  kver=$(basename "$kernel"); kver=${kver#vmlinuz-}
else
  kernel="" kver=""
  for v in $(printf '%s\n' /boot/vmlinuz-* | sed 's|^/boot/vmlinuz-||' | sort -V -r); do
    k=/boot/vmlinuz-$v
    if [[ -f /lib/modules/$v/modules.dep ]]; then kernel=$k kver=$v; break; fi
  done
fi
[[ -n "$kernel" && -e "$kernel" ]] || skip "no guest kernel: no /boot/vmlinuz-* with /lib/modules/<ver>/modules.dep (Debian package linux-image-6.12-cloud-amd64)"
[[ -r "$kernel" ]] || fail_setup "$kernel is not readable by $(id -un)"
[[ -n "$guest" && -x "$guest" ]] || fail_setup "--guest: guest program missing ($guest)"
[[ -n "$host" && -x "$host" ]] || fail_setup "--host: host peer missing ($host)"
if [[ -z "${E2E_BACKEND_CMD:-}" ]]; then
  [[ -n "$backend" && -x "$backend" ]] || fail_setup "--backend: back-end missing ($backend)"
  backend_cmd="$backend --socket {socket} --uds-path {uds} --guest-cid {cid}"
else
  backend_cmd=$E2E_BACKEND_CMD
fi

workdir=${workdir:-$(pwd)/e2e-work}
mkdir -p "$workdir" || fail_setup "cannot create $workdir"
rm -f "$workdir"/{console.log,backend.log,host.log,qemu.log,stop-cont.log,initramfs.cpio.gz}
# Unix socket paths must stay under 108 bytes: keep them in a short temp dir.
sockdir=$(mktemp -d /tmp/vhu-e2e.XXXXXX)
sock=$sockdir/vhost.sock uds=$sockdir/vsock.uds cid=3

pids=()
# Forget a child once it was waited for, so cleanup never signals a reused pid.
reaped() { local p keep=(); for p in "${pids[@]}"; do [[ "$p" == "$1" ]] || keep+=("$p"); done; pids=("${keep[@]}"); }
# shellcheck disable=SC2317  # invoked by the EXIT trap
cleanup() {
  local p
  ((${#pids[@]})) || { rm -rf "$sockdir"; return; }
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
  sleep 0.5
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null; done
  rm -rf "$sockdir"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 1' INT TERM

# --- initramfs ---------------------------------------------------------------
"$here/make-initramfs.sh" --kver "$kver" --guest "$guest" --init "$here/guest/init.sh" \
  --out "$workdir/initramfs.cpio.gz" 2>"$workdir/initramfs.log" \
  || { cat "$workdir/initramfs.log"; fail_setup "building the initramfs failed"; }
log "kernel $kernel; $(tail -n1 "$workdir/initramfs.log" | sed 's/^make-initramfs.sh: //')"

# --- back-end, host peer, QEMU -------------------------------------------------
cmd=${backend_cmd//\{socket\}/$sock}
cmd=${cmd//\{uds\}/$uds}
cmd=${cmd//\{cid\}/$cid}
log "back-end: $cmd"
# shellcheck disable=SC2086
$cmd >"$workdir/backend.log" 2>&1 &
backend_pid=$!
pids+=("$backend_pid")
for _ in $(seq 100); do
  [[ -S "$sock" ]] && break
  kill -0 "$backend_pid" 2>/dev/null || break
  sleep 0.1
done
if [[ ! -S "$sock" ]]; then
  tail -n 40 "$workdir/backend.log"
  fail_setup "the back-end did not create $sock within 10 s"
fi

"$host" --uds "$uds" --size "$size" --timeout "$timeout" --steps "$steps" >"$workdir/host.log" 2>&1 &
host_pid=$!
pids+=("$host_pid")
for _ in $(seq 50); do
  grep -q '^READY' "$workdir/host.log" 2>/dev/null && break
  sleep 0.1
done
grep -q '^READY' "$workdir/host.log" || { cat "$workdir/host.log"; fail_setup "the host peer did not start"; }

append="console=ttyS0 panic=-1 loglevel=4 e2e.size=$size e2e.steps=$steps"
# shellcheck disable=SC2054  # the commas belong to QEMU options
qemu_args=(-machine pc,memory-backend=mem0 -accel tcg -cpu max -smp 1 -m 512M
  -object memory-backend-memfd,id=mem0,size=512M,share=on
  -chardev "socket,id=c0,path=$sock" -device vhost-user-vsock-pci,chardev=c0
  -kernel "$kernel" -initrd "$workdir/initramfs.cpio.gz" -append "$append"
  -nographic -serial "file:$workdir/console.log" -nodefaults -no-user-config -no-reboot)
if [[ -n "${E2E_QEMU_ARGS:-}" ]]; then
  read -r -a _extra <<<"$E2E_QEMU_ARGS"
  qemu_args+=("${_extra[@]}")
fi
if ((stop_cont)); then
  command -v python3 >/dev/null || fail_setup "--stop-cont needs python3"
  qemu_args+=(-monitor "unix:$sockdir/mon.sock,server=on,wait=off")
fi
log "qemu: $qemu ${qemu_args[*]}"
t_qemu=$(date +%s%N)
"$qemu" "${qemu_args[@]}" </dev/null >"$workdir/qemu.log" 2>&1 &
qemu_pid=$!
pids+=("$qemu_pid")
if ((stop_cont)); then
  python3 "$here/stop-cont.py" --monitor "$sockdir/mon.sock" --console "$workdir/console.log" \
    >"$workdir/stop-cont.log" 2>&1 &
  stopcont_pid=$!
  pids+=("$stopcont_pid")
fi

# --- wait ----------------------------------------------------------------------
deadline=$((SECONDS + timeout))
why=""
while kill -0 "$qemu_pid" 2>/dev/null; do
  if ((SECONDS >= deadline)); then why="timeout: the guest did not power off within ${timeout} s"; break; fi
  if ! kill -0 "$backend_pid" 2>/dev/null; then why="the back-end exited while the guest ran"; break; fi
  sleep 0.5
done
if [[ -z "$why" ]]; then
  wait "$qemu_pid"
  qemu_rc=$?
  reaped "$qemu_pid"
  t_end=$(date +%s%N)
  log "QEMU exited with status $qemu_rc after $(((t_end - t_qemu) / 1000000)) ms"
  [[ $qemu_rc -eq 0 ]] || why="QEMU exited with status $qemu_rc"
fi
# The host peer finishes its steps before the guest powers off; give it a moment.
for _ in $(seq 100); do kill -0 "$host_pid" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$host_pid" 2>/dev/null; then
  host_rc="still running"
else
  wait "$host_pid"; host_rc=$?; reaped "$host_pid"
fi

if ((stop_cont)); then
  for _ in $(seq 50); do kill -0 "$stopcont_pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$stopcont_pid" 2>/dev/null; then stopcont_rc="still running"; else wait "$stopcont_pid"; stopcont_rc=$?; reaped "$stopcont_pid"; fi
fi

# Stop the back-end the way a user does (SIGTERM) and check it exits cleanly
# (sanitizer reports make it exit non-zero).
backend_rc=""
if kill -0 "$backend_pid" 2>/dev/null; then
  kill -TERM "$backend_pid"
  for _ in $(seq 100); do kill -0 "$backend_pid" 2>/dev/null || break; sleep 0.1; done
fi
if kill -0 "$backend_pid" 2>/dev/null; then
  backend_rc="did not exit within 10 s of SIGTERM"
else
  wait "$backend_pid"; backend_rc=$?; reaped "$backend_pid"
fi

# --- verdict -------------------------------------------------------------------
console=$workdir/console.log
tr -d '\r' <"$console" 2>/dev/null | grep -a -o 'E2E: .*' >"$workdir/guest-results.txt"
echo "---- guest (console) ----"
cat "$workdir/guest-results.txt"
echo "---- host peer ----"
grep -a -E '^(HOST|host):' "$workdir/host.log"
if ((stop_cont)); then
  echo "---- stop/cont ----"
  grep -a -v ': cycle ' "$workdir/stop-cont.log"
fi

problems=()
[[ -n "$why" ]] && problems+=("$why")
IFS=, read -r -a step_list <<<"$steps"
for s in "${step_list[@]}"; do
  grep -q "^E2E: PASS $s " "$workdir/guest-results.txt" || problems+=("guest: step $s did not pass")
  grep -q "^HOST: PASS $s " "$workdir/host.log" || problems+=("host: step $s did not pass")
done
grep -q '^E2E: RESULT PASS' "$workdir/guest-results.txt" || problems+=("guest: no 'RESULT PASS'")
[[ "$host_rc" == 0 ]] || problems+=("host peer: exit status $host_rc")
[[ "$backend_rc" == 0 ]] || problems+=("back-end: exit status $backend_rc after SIGTERM")
if ((stop_cont)); then
  [[ "$stopcont_rc" == 0 ]] || problems+=("stop-cont.py: exit status $stopcont_rc")
  grep -q 'done: [1-9][0-9]* stop/cont cycles' "$workdir/stop-cont.log" \
    || problems+=("no stop/cont cycle happened while the guest program ran")
fi

total_ms=$((($(date +%s%N) - t_start) / 1000000))
if ((${#problems[@]} == 0)); then
  log "PASS: every step passed on both sides (total ${total_ms} ms; logs in $workdir)"
  exit 0
fi
echo "---- guest console (last 60 lines) ----"
tr -d '\r' <"$console" 2>/dev/null | tail -n 60
echo "---- back-end log (last 60 lines) ----"
tail -n 60 "$workdir/backend.log"
echo "---- host peer log ----"
tail -n 40 "$workdir/host.log"
echo "---- QEMU stderr ----"
tail -n 20 "$workdir/qemu.log"
for p in "${problems[@]}"; do log "FAIL: $p"; done
log "FAIL (total ${total_ms} ms; logs in $workdir)"
exit 1

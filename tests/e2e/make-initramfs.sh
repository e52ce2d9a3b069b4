#!/usr/bin/env bash
# Builds the end-to-end test's initramfs (gzip'ed newc cpio): busybox-static,
# the static guest program, guest/init.sh as /init, and the kernel modules the
# vhost-user-vsock-pci device needs, with their dependencies, taken from
# /lib/modules/<version> (modules.dep; built-in ones are skipped; .ko.xz/.ko.zst/
# .ko.gz are decompressed here because busybox insmod loads plain .ko only).
#
# usage: make-initramfs.sh --kver VERSION --guest BIN --init FILE --out FILE
#                          [--busybox PATH] [--moddir DIR] [--modules "m1 m2"]
set -euo pipefail

kver="" guest="" init="" out="" busybox=/bin/busybox moddir="" modules="virtio_pci vmw_vsock_virtio_transport"
while (($#)); do
  case "$1" in
    --kver) kver=$2 ;;
    --guest) guest=$2 ;;
    --init) init=$2 ;;
    --out) out=$2 ;;
    --busybox) busybox=$2 ;;
    --moddir) moddir=$2 ;;
    --modules) modules=$2 ;;
    *) echo "make-initramfs.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift 2
done
die() { echo "make-initramfs.sh: $*" >&2; exit 1; }
[[ -n "$kver" && -n "$guest" && -n "$init" && -n "$out" ]] || die "--kver, --guest, --init and --out are required"
moddir=${moddir:-/lib/modules/$kver}
[[ -f "$moddir/modules.dep" ]] || die "no $moddir/modules.dep"
[[ -x "$busybox" ]] || die "no busybox at $busybox (install busybox-static)"
if LC_ALL=C readelf -l "$busybox" 2>/dev/null | grep -q 'program interpreter'; then
  die "$busybox is dynamically linked: install busybox-static"
fi
if LC_ALL=C readelf -l "$guest" 2>/dev/null | grep -q 'program interpreter'; then
  die "$guest is dynamically linked: it must be built -static"
fi
command -v cpio >/dev/null || die "cpio not found (install cpio)"

# modules.dep: "kernel/path/name.ko[.xz]: dep1 dep2 ..."; names compare with - and _ equal.
declare -A dep_of path_of
while IFS= read -r line; do
  p=${line%%:*}
  b=${p##*/}; b=${b%%.ko*}; b=${b//-/_}
  path_of[$b]=$p
  dep_of[$b]=${line#*:}
done <"$moddir/modules.dep"
builtin=""
[[ -f "$moddir/modules.builtin" ]] && builtin=$(sed -e 's|.*/||' -e 's|\.ko$||' -e 's|-|_|g' "$moddir/modules.builtin")

declare -A seen
order=()
visit() {  # depth-first: dependencies before the module
  local m=${1//-/_} d b
  [[ -n "${seen[$m]:-}" ]] && return 0
  seen[$m]=1
  if [[ -z "${path_of[$m]:-}" ]]; then
    grep -qx "$m" <<<"$builtin" && return 0
    die "module $m is neither in $moddir/modules.dep nor built in"
  fi
  for d in ${dep_of[$m]}; do
    b=${d##*/}; b=${b%%.ko*}
    visit "$b"
  done
  order+=("$m")
}
for m in $modules; do visit "$m"; done

root=$(mktemp -d "${TMPDIR:-/tmp}/e2e-initramfs.XXXXXX")
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,dev,proc,sys,tmp,lib/e2e-modules}
cp "$busybox" "$root/bin/busybox"
ln -s busybox "$root/bin/sh"
cp "$guest" "$root/bin/vsock-e2e-guest"
cp "$init" "$root/init"
chmod 0755 "$root/init" "$root/bin/vsock-e2e-guest" "$root/bin/busybox"
: >"$root/lib/e2e-modules/order"
for m in "${order[@]}"; do
  src="$moddir/${path_of[$m]}"
  dst="$root/lib/e2e-modules/$m.ko"
  case "$src" in
    *.ko) cp "$src" "$dst" ;;
    *.ko.xz) xz -dc "$src" >"$dst" ;;
    *.ko.zst) zstd -qdc "$src" >"$dst" ;;
    *.ko.gz) gzip -dc "$src" >"$dst" ;;
    *) die "unknown module format: $src" ;;
  esac
  echo "$m.ko" >>"$root/lib/e2e-modules/order"
done
echo "make-initramfs.sh: kernel $kver, modules in load order: ${order[*]}" >&2
(cd "$root" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc -R 0:0 --quiet) | gzip -1 >"$out.tmp"
mv "$out.tmp" "$out"

#!/bin/sh
# /init of the end-to-end test's initramfs (busybox-static sh). Mounts the
# pseudo file systems, loads the kernel modules listed in /lib/e2e-modules/order
# (dependencies first, as make-initramfs.sh resolved them from modules.dep),
# runs the guest program at once (so its first connection races the device
# start, as in ../shared/traces), prints diagnostics if it failed, powers off.
/bin/busybox mkdir -p /proc /sys /dev /tmp
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev 2>/dev/null
/bin/busybox --install -s /bin
export PATH=/bin

up() { read -r u _ </proc/uptime; echo "$u"; }
echo "E2E: init start kernel=$(uname -r) uptime=$(up)"
failed=0
while read -r m; do
  [ -n "$m" ] || continue
  if ! insmod "/lib/e2e-modules/$m"; then
    echo "E2E: FAIL insmod $m"
    failed=1
  fi
done </lib/e2e-modules/order
if [ "$failed" = 0 ]; then
  /bin/vsock-e2e-guest
  rc=$?
else
  echo "E2E: RESULT FAIL (module loading)"
  rc=1
fi
echo "E2E: guest program exited with status $rc uptime=$(up)"
if [ "$rc" != 0 ]; then
  echo "E2E: modules: $(cut -d' ' -f1 /proc/modules | tr '\n' ' ')"
  for d in /sys/bus/virtio/devices/*; do
    [ -e "$d/device" ] && echo "E2E: virtio device ${d##*/} id=$(cat "$d/device") status=$(cat "$d/status" 2>/dev/null) driver=$(readlink "$d/driver")"
  done
  dmesg | grep -i -E 'vsock|virtio' | tail -n 20 | sed 's/^/E2E: dmesg: /'
fi
sync
poweroff -f
# poweroff -f does not return; if it did, panic=-1 and -no-reboot end QEMU.
exit 1

#include "profiles.h"

namespace conform {

const std::vector<Profile>& profiles() {
  static const std::vector<Profile> p = {
      {"ref", "the bundled reference back-end", "{bindir}/vhost-user-vsock-ref --socket {socket} --uds-path {uds} --guest-cid {cid} --spec {spec}",
       "vsock",
       "{bindir}/vhost-user-vsock-ref --spec {spec} --vm guest-cid={cid},socket={socket},uds-path={uds},groups=conform "
       "--vm guest-cid={cid2},socket={socket2},uds-path={uds2},groups=conform"},
      // Runs as root only; serves one connection, then exits.
      {"virtiofsd", "QEMU 7.2 virtiofsd (libvhost-user)",
       "/usr/lib/qemu/virtiofsd --socket-path={socket} -o source={dir} -o cache=none", "fs"},
      {"qsd-blk", "qemu-storage-daemon vhost-user-blk export (libvhost-user)",
       "qemu-storage-daemon --blockdev driver=null-co,node-name=disk0,size=67108864 --export "
       "type=vhost-user-blk,id=exp0,node-name=disk0,addr.type=unix,addr.path={socket},writable=on",
       "blk"},
      // testpmd quits when its stdin closes: feed it a pipe that stays open.
      {"dpdk", "DPDK 22.11 vhost PMD via dpdk-testpmd",
       "sh -c 'sleep 100000 | dpdk-testpmd --no-huge -m 128 --no-pci --no-shconf --file-prefix=vuc$$ --vdev "
       "net_vhost0,iface={socket},queues=1 -- -i --total-num-mbufs=2048'",
       "net"},
      {"vhost-user-gpu", "QEMU vhost-user-gpu", "/usr/lib/qemu/vhost-user-gpu --socket-path={socket}", "gpu"},
  };
  return p;
}

std::optional<TargetSpec> profile_target(const std::string& name, const std::string& bindir, vhu::SpecText spec,
                                         bool siblings) {
  for (const auto& p : profiles()) {
    if (p.name != name) continue;
    if (siblings && p.siblings_command.empty()) return std::nullopt;
    TargetSpec t;
    t.mode = TargetMode::Spawn;
    t.device = p.device;
    std::string cmd = siblings ? p.siblings_command : p.command;
    for (size_t pos; (pos = cmd.find("{bindir}")) != std::string::npos;) cmd.replace(pos, 8, bindir);
    const std::string text = spec == vhu::SpecText::Newest ? "newest" : "upstream";
    for (size_t pos; (pos = cmd.find("{spec}")) != std::string::npos;) cmd.replace(pos, 6, text);
    t.command = cmd;
    return t;
  }
  return std::nullopt;
}

}  // namespace conform

#include "cli.h"

#include <fmt/format.h>

#include <charconv>
#include <set>

#include "vhu/vsock.h"

namespace vsockref {

namespace {
template <class T>
vhu::Result<T> number(const std::string& key, const std::string& v) {
  T out{};
  const char* end = v.data() + v.size();
  auto [p, ec] = std::from_chars(v.data(), end, out);
  if (ec != std::errc{} || p != end || v.empty())
    return vhu::Err(fmt::format("--vm: {}='{}' is not a number in range", key, v));
  return out;
}
}  // namespace

vhu::Result<std::set<std::string>> parse_groups(const std::string& text) {
  std::set<std::string> out;
  size_t start = 0;
  for (;;) {
    const size_t plus = text.find('+', start);
    const std::string g = text.substr(start, plus == std::string::npos ? std::string::npos : plus - start);
    if (g.empty()) return vhu::Err(fmt::format("groups '{}': empty group name", text));
    out.insert(g);
    if (plus == std::string::npos) break;
    start = plus + 1;
  }
  return out;
}

vhu::Result<VmConfig> parse_vm_spec(const std::string& spec, const VmConfig& defaults) {
  VmConfig vm = defaults;
  bool have_cid = false, have_socket = false;
  size_t start = 0;
  while (start <= spec.size()) {
    const size_t comma = spec.find(',', start);
    const std::string item = spec.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    start = comma == std::string::npos ? spec.size() + 1 : comma + 1;
    if (item.empty()) continue;
    const size_t eq = item.find('=');
    if (eq == std::string::npos) return vhu::Err(fmt::format("--vm: '{}' is not key=value", item));
    const std::string key = item.substr(0, eq), val = item.substr(eq + 1);
    if (key == "guest-cid" || key == "guest_cid") {
      auto n = number<uint64_t>(key, val);
      if (!n) return n.error();
      vm.guest_cid = *n;
      have_cid = true;
    } else if (key == "socket") {
      vm.socket = val;
      have_socket = !val.empty();
    } else if (key == "uds-path" || key == "uds_path") {
      vm.uds_path = val;
    } else if (key == "groups") {
      auto g = parse_groups(val);
      if (!g) return g.error();
      vm.groups = *g;
    } else if (key == "tx-buffer-size" || key == "tx_buffer_size") {
      auto n = number<uint32_t>(key, val);
      if (!n) return n.error();
      vm.tx_buffer_size = *n;
    } else if (key == "queue-size" || key == "queue_size") {
      auto n = number<uint32_t>(key, val);
      if (!n) return n.error();
      vm.queue_size = *n;
    } else {
      return vhu::Err(fmt::format("--vm: unknown key '{}'", key));
    }
  }
  if (!have_cid) return vhu::Err(fmt::format("--vm '{}': guest-cid is missing", spec));
  if (!have_socket) return vhu::Err(fmt::format("--vm '{}': socket is missing", spec));
  return vm;
}

vhu::Result<void> validate_vms(const std::vector<VmConfig>& vms) {
  if (vms.empty()) return vhu::Err("no VM: give --socket (and --guest-cid, --uds-path) or --vm");
  std::set<uint64_t> cids;
  std::set<std::string> paths;
  for (const VmConfig& vm : vms) {
    if (vm.guest_cid < 3 || vhu::vsock::is_reserved_cid(vm.guest_cid))
      return vhu::Err(fmt::format("guest CID {} is reserved (must be >= 3 and fit in 32 bits)", vm.guest_cid));
    if (!cids.insert(vm.guest_cid).second) return vhu::Err(fmt::format("guest CID {} used twice", vm.guest_cid));
    if (vm.socket.empty()) return vhu::Err(fmt::format("CID {}: no vhost-user socket path", vm.guest_cid));
    if (!paths.insert(vm.socket).second) return vhu::Err(fmt::format("path {} used twice", vm.socket));
    if (!vm.uds_path.empty() && !paths.insert(vm.uds_path).second)
      return vhu::Err(fmt::format("path {} used twice", vm.uds_path));
    if (vm.tx_buffer_size == 0) return vhu::Err("tx-buffer-size must be positive");
    if (vm.queue_size == 0 || (vm.queue_size & (vm.queue_size - 1)) || vm.queue_size > 32768)
      return vhu::Err(fmt::format("queue-size {} is not a power of two up to 32768", vm.queue_size));
  }
  return vhu::Ok();
}

}  // namespace vsockref

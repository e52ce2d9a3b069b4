// Turns a real front-end trace (../shared/traces/*.txt, the fake back-end's
// log of what QEMU sent) into a `vhost_user_messages` input: each logged
// request becomes a record with the payload rebuilt from its decoded fields
// and the fd count it carried; each kick the log saw becomes a kick action.
//   vhu-trace2corpus TRACE.txt OUT_FILE [SOURCE]
// SOURCE is the log column to follow ("BE" by default; "BE-DST" for the
// destination of a migration). The log prints every field of the payloads
// QEMU sends to a vsock back-end, so the rebuilt bytes are the bytes sent.
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "vhu/fuzz_framing.h"
#include "vhu/messages.h"

namespace fr = vhu::fuzz::framing;

namespace {

std::vector<std::string> words(const std::string& line) {
  std::istringstream in(line);
  std::vector<std::string> out;
  for (std::string w; in >> w;) out.push_back(w);
  return out;
}

// The "key=value" words of a log line, first occurrence of each key.
std::map<std::string, std::string> fields(const std::string& line) {
  std::map<std::string, std::string> out;
  for (const std::string& w : words(line)) {
    const auto eq = w.find('=');
    if (eq != std::string::npos && eq > 0) out.emplace(w.substr(0, eq), w.substr(eq + 1));
  }
  return out;
}

uint64_t num(const std::map<std::string, std::string>& f, const std::string& k) {
  auto it = f.find(k);
  if (it == f.end()) throw std::runtime_error("field " + k + " missing");
  return std::stoull(it->second, nullptr, 0);
}

std::vector<uint8_t> hex(const std::string& s) {
  std::vector<uint8_t> out;
  for (size_t i = 0; i + 1 < s.size(); i += 2) out.push_back(static_cast<uint8_t>(std::stoul(s.substr(i, 2), nullptr, 16)));
  return out;
}

template <class T>
std::vector<uint8_t> bytes_of(const T& v) {
  const auto* p = reinterpret_cast<const uint8_t*>(&v);
  return {p, p + sizeof v};
}

vhu::MemoryRegion region(const std::map<std::string, std::string>& f) {
  return {num(f, "guest_phys"), num(f, "size"), num(f, "user_addr"), num(f, "mmap_offset")};
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s TRACE.txt OUT_FILE [SOURCE]\n", argv[0]);
    return 2;
  }
  const std::string source = argc > 3 ? argv[3] : "BE";
  std::ifstream in(argv[1]);
  if (!in) {
    std::fprintf(stderr, "%s: cannot read %s\n", argv[0], argv[1]);
    return 2;
  }
  std::vector<std::string> lines;
  for (std::string l; std::getline(in, l);) lines.push_back(l);

  // "  2.281476 10:33:11.473010 BE      #16 -> SET_MEM_TABLE(5) flags=0x9[v1,NEED_REPLY] size=40 fds=1 ..."
  // "  2.281623 10:33:11.473156 BE      KICK ring 0 (eventfd count 1, total 1)"
  std::vector<uint8_t> out;
  size_t messages = 0, kicks = 0;
  for (size_t i = 0; i < lines.size(); ++i) {
    const auto w = words(lines[i]);
    if (w.size() < 5 || w[2] != source) continue;
    if (w[3] == "KICK" && w[4] == "ring" && w.size() > 5) {
      const auto ring = static_cast<uint32_t>(std::stoul(w[5]));
      fr::append_pod(out, {fr::kActionKick, 0, 0, 0, 0}, ring);
      ++kicks;
      continue;
    }
    if (w[3].empty() || w[3][0] != '#' || w[4] != "->" || w.size() < 9) continue;
    const std::string& call = w[5];  // NAME(id)
    const auto paren = call.find('(');
    if (paren == std::string::npos) continue;
    const std::string name = call.substr(0, paren);
    const auto id = static_cast<uint32_t>(std::stoul(call.substr(paren + 1)));
    // The header's fields come first; the payload's (which reuse names like
    // size and flags) follow fds=.
    const auto hdr = fields(lines[i]);
    const auto flags = static_cast<uint32_t>(std::stoul(hdr.at("flags"), nullptr, 16));
    const auto size = std::stoul(hdr.at("size"));
    const auto nfds = static_cast<uint8_t>(std::stoul(hdr.at("fds")));
    const auto fds_at = lines[i].find(" fds=");
    const auto f = fields(lines[i].substr(lines[i].find(' ', fds_at + 1) == std::string::npos
                                              ? lines[i].size()
                                              : lines[i].find(' ', fds_at + 1)));
    const vhu::RequestInfo* info = vhu::request_info(vhu::Plane::Frontend, id);
    std::vector<uint8_t> payload;
    try {
      switch (info ? info->request : vhu::PayloadKind::None) {
        case vhu::PayloadKind::None: break;
        case vhu::PayloadKind::U64: payload = bytes_of(num(f, "u64")); break;
        case vhu::PayloadKind::VringState:
          payload = bytes_of(vhu::VringState{static_cast<uint32_t>(num(f, "index")), static_cast<uint32_t>(num(f, "num"))});
          break;
        case vhu::PayloadKind::VringAddr:
          payload = bytes_of(vhu::VringAddr{static_cast<uint32_t>(num(f, "index")), static_cast<uint32_t>(num(f, "flags")),
                                            num(f, "desc_uva"), num(f, "used_uva"), num(f, "avail_uva"),
                                            num(f, "log_gpa")});
          break;
        case vhu::PayloadKind::MemoryTable: {
          // nregions and the regions are on the lines that follow.
          vhu::MemoryTable t{};
          size_t j = i + 1;
          for (; j < lines.size() && lines[j].find(" -> ") == std::string::npos; ++j) {
            const auto g = fields(lines[j]);
            if (g.count("nregions")) t.nregions = static_cast<uint32_t>(num(g, "nregions"));
            const auto pos = lines[j].find("region[");
            if (pos != std::string::npos && g.count("guest_phys")) {
              const size_t k = std::stoul(lines[j].substr(pos + 7));
              if (k < vhu::kMaxMemRegions) t.regions[k] = region(g);
            }
            if (lines[j].find("<- reply") != std::string::npos) break;
          }
          payload = bytes_of(t);
          payload.resize(8 + 32 * std::min<size_t>(t.nregions, vhu::kMaxMemRegions));
          break;
        }
        case vhu::PayloadKind::MemRegion: payload = bytes_of(vhu::MemRegionMsg{0, region(f)}); break;
        case vhu::PayloadKind::Config: {
          const auto data = hex(f.at("data"));
          payload = bytes_of(vhu::ConfigHeader{static_cast<uint32_t>(num(f, "offset")), static_cast<uint32_t>(num(f, "size")),
                                               static_cast<uint32_t>(num(f, "flags"))});
          payload.insert(payload.end(), data.begin(), data.end());
          break;
        }
        case vhu::PayloadKind::DeviceStateParams:
          payload = bytes_of(vhu::DeviceStateParams{f.at("direction") == "LOAD" ? vhu::kTransferLoad : vhu::kTransferSave,
                                                    vhu::kPhaseStopped});
          break;
        default:
          payload.resize(size);  // not decoded by the log: zeros of the logged size
          break;
      }
    } catch (const std::exception& e) {
      std::fprintf(stderr, "%s:%zu: %s: %s\n", argv[1], i + 1, name.c_str(), e.what());
      return 1;
    }
    if (payload.size() != size) {
      std::fprintf(stderr, "%s:%zu: %s: rebuilt %zu payload bytes, the log says %lu\n", argv[1], i + 1,
                   name.c_str(), payload.size(), size);
      return 1;
    }
    fr::append(out, {id, flags, 0, static_cast<uint8_t>(nfds + 1), 0}, payload);
    ++messages;
  }
  if (!messages) {
    std::fprintf(stderr, "%s: no %s messages found\n", argv[1], source.c_str());
    return 1;
  }
  std::ofstream(argv[2], std::ios::binary).write(reinterpret_cast<const char*>(out.data()),
                                                 static_cast<std::streamsize>(out.size()));
  std::printf("%s: %zu messages, %zu kicks -> %s (%zu bytes)\n", argv[1], messages, kicks, argv[2], out.size());
  return 0;
}

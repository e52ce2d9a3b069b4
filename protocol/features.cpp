#include "vhu/features.h"

#include <fmt/format.h>

namespace vhu {
namespace {

struct BitName {
  unsigned bit;
  std::string_view name;
};

constexpr BitName kVirtio[] = {
#define VHU_X(name, bit) {bit, #name},
    VHU_VIRTIO_FEATURES(VHU_X)
#undef VHU_X
};

constexpr BitName kVsock[] = {
#define VHU_X(name, bit) {bit, #name},
    VHU_VSOCK_FEATURES(VHU_X)
#undef VHU_X
};

struct ProtocolBit {
  unsigned bit;
  std::string_view name;
  SpecText text;
};

constexpr ProtocolBit kProtocol[] = {
#define VHU_X(name, bit, text) {bit, #name, SpecText::text},
    VHU_PROTOCOL_FEATURES(VHU_X)
#undef VHU_X
};

const ProtocolBit* find_protocol(unsigned bit) {
  for (const auto& p : kProtocol)
    if (p.bit == bit) return &p;
  return nullptr;
}

template <class NameOf>
std::string mask_string(uint64_t mask, NameOf name_of) {
  std::string out;
  for (unsigned b = 0; b < 64; ++b) {
    if (!has_bit(mask, b)) continue;
    if (!out.empty()) out += '|';
    std::string_view n = name_of(b);
    out += n.empty() ? fmt::format("bit{}", b) : std::string(n);
  }
  return out.empty() ? "0" : out;
}

}  // namespace

std::string_view virtio_feature_name(unsigned bit, bool vsock) {
  if (vsock)
    for (const auto& v : kVsock)
      if (v.bit == bit) return v.name;
  for (const auto& v : kVirtio)
    if (v.bit == bit) return v.name;
  return {};
}

std::string_view protocol_feature_name(unsigned bit) {
  const ProtocolBit* p = find_protocol(bit);
  return p ? p->name : std::string_view{};
}

bool protocol_feature_known(unsigned bit) { return find_protocol(bit) != nullptr; }

SpecText protocol_feature_text(unsigned bit) {
  const ProtocolBit* p = find_protocol(bit);
  return p ? p->text : SpecText::Newest;
}

uint64_t protocol_features_in(SpecText text) {
  uint64_t mask = 0;
  for (const auto& p : kProtocol)
    if (p.text == SpecText::Upstream || text == SpecText::Newest) mask |= bit(p.bit);
  return mask;
}

std::string virtio_features_string(uint64_t mask, bool vsock) {
  return mask_string(mask, [vsock](unsigned b) { return virtio_feature_name(b, vsock); });
}

std::string protocol_features_string(uint64_t mask) {
  return mask_string(mask, [](unsigned b) { return protocol_feature_name(b); });
}

}  // namespace vhu

#include "fuzz_mutate.h"

#include <algorithm>
#include <cstring>

#include "vhu/messages.h"

namespace conform::fuzz {

namespace fr = vhu::fuzz::framing;

Input parse(std::span<const uint8_t> bytes) {
  Input out;
  fr::for_each_record(bytes, [&](const fr::RecordHeader& h, std::span<const uint8_t> payload) {
    out.push_back(Record{h, {payload.begin(), payload.end()}});
  });
  return out;
}

std::vector<uint8_t> serialize(const Input& in) {
  std::vector<uint8_t> out;
  for (const auto& r : in) fr::append(out, r.hdr, r.payload);
  return out;
}

std::string record_name(const Record& r) {
  switch (r.hdr.request) {
    case fr::kActionKick: return "kick";
    case fr::kActionPoke: return "poke";
    case fr::kActionStatePipe: return "state-pipe";
    case fr::kActionDisconnect: return "disconnect";
    case fr::kActionRaw: return "raw";
    default: return vhu::request_name(vhu::Plane::Frontend, r.hdr.request);
  }
}

namespace {

size_t below(Rng& rng, size_t n) { return n == 0 ? 0 : static_cast<size_t>(rng() % n); }
bool one_in(Rng& rng, unsigned n) { return rng() % n == 0; }

// Values that sit on the edges back-ends check, or forget to: zero, one, sign
// bits, the 16-bit ring index wrap, the 32768 ring limit, page and region
// sizes, flag bits of the u64 vring payloads, and values near 2^32 and 2^64.
constexpr uint64_t kInteresting[] = {
    0,          1,          2,          3,          4,          0x7f,        0x80,       0xff,
    0x100,      0x101,      0x1ff,      0x7fff,     0x8000,     0x8001,      0xffff,     0x10000,
    0x1000,     0x200000,   0x7fffffff, 0x80000000, 0xffffffff, 0x100000000, 0xfffffffffffff000ull,
    0x7fffffffffffffffull,  0x8000000000000000ull,  0xffffffffffffffffull,   0x40000000,  0x100000000000ull,
};

void put_int(std::vector<uint8_t>& p, size_t at, uint64_t v, size_t width) {
  width = std::min(width, p.size() - at);
  std::memcpy(p.data() + at, &v, width);  // little-endian host, as the framing
}

// A payload field rewritten: the aligned word widths match the payload
// structs (u32 indices and counts, u64 addresses and sizes).
void mutate_payload(std::vector<uint8_t>& p, Rng& rng) {
  if (p.empty()) {
    p.resize(8);
    put_int(p, 0, kInteresting[below(rng, std::size(kInteresting))], 8);
    return;
  }
  switch (below(rng, 6)) {
    case 0: {  // flip one bit
      const size_t i = below(rng, p.size());
      p[i] ^= static_cast<uint8_t>(1u << below(rng, 8));
      break;
    }
    case 1:  // a random byte
      p[below(rng, p.size())] = static_cast<uint8_t>(rng());
      break;
    case 2:
    case 3: {  // an aligned u32 or u64 field gets an edge value, maybe nudged by one
      const size_t width = (rng() & 1) ? 8 : 4;
      const size_t at = below(rng, (p.size() + width - 1) / width) * width;
      uint64_t v = kInteresting[below(rng, std::size(kInteresting))];
      if (one_in(rng, 4)) v += one_in(rng, 2) ? 1 : static_cast<uint64_t>(-1);
      put_int(p, at, v, width);
      break;
    }
    case 4: {  // an aligned field gets a small signed delta (lengths, indices)
      const size_t width = (rng() & 1) ? 8 : 4;
      const size_t at = below(rng, (p.size() + width - 1) / width) * width;
      uint64_t v = 0;
      std::memcpy(&v, p.data() + at, std::min(width, p.size() - at));
      v += static_cast<uint64_t>(static_cast<int64_t>(below(rng, 33)) - 16);
      put_int(p, at, v, width);
      break;
    }
    default: {  // a run of bytes set to one value
      const size_t at = below(rng, p.size());
      const size_t n = 1 + below(rng, std::min<size_t>(16, p.size() - at));
      std::fill_n(p.begin() + static_cast<ptrdiff_t>(at), n, static_cast<uint8_t>(one_in(rng, 2) ? 0xff : rng()));
      break;
    }
  }
}

uint32_t random_request(Rng& rng) {
  if (one_in(rng, 8)) return fr::kActionBase + 1 + static_cast<uint32_t>(below(rng, 5));
  if (one_in(rng, 16)) return static_cast<uint32_t>(rng());  // unknown ids too
  const auto all = vhu::all_requests(vhu::Plane::Frontend);
  return all[below(rng, all.size())].id;
}

void mutate_once(Input& in, const Input& other, Rng& rng) {
  if (in.empty()) in.push_back(Record{});
  Record& r = in[below(rng, in.size())];
  switch (below(rng, 15)) {
    case 0:
    case 1:
    case 2:
    case 3:
      mutate_payload(r.payload, rng);
      break;
    case 4:
      r.hdr.request = random_request(rng);
      break;
    case 5:  // flags: need_reply, the reply bit, the version, a reserved bit
      switch (below(rng, 4)) {
        case 0: r.hdr.flags ^= vhu::kFlagNeedReply; break;
        case 1: r.hdr.flags ^= vhu::kFlagReply; break;
        case 2: r.hdr.flags = (r.hdr.flags & ~vhu::kFlagVersionMask) | static_cast<uint32_t>(below(rng, 4)); break;
        default: r.hdr.flags ^= 1u << below(rng, 32); break;
      }
      break;
    case 6: {  // size: cut or grow the payload
      if (!r.payload.empty() && one_in(rng, 2)) {
        r.payload.resize(below(rng, r.payload.size()));
      } else {
        const size_t grow = one_in(rng, 8) ? below(rng, fr::kMaxPayload) : 1 + below(rng, 16);
        const size_t n = std::min(fr::kMaxPayload, r.payload.size() + grow);
        while (r.payload.size() < n) r.payload.push_back(one_in(rng, 2) ? 0 : static_cast<uint8_t>(rng()));
      }
      break;
    }
    case 7:  // fd count: the rule's, or an exact number of 0..8
      r.hdr.fds = one_in(rng, 3) ? 0 : static_cast<uint8_t>(1 + below(rng, vhu::kMaxFds + 1));
      r.hdr.aux ^= one_in(rng, 4) ? fr::kAuxSignal : 0;
      // Now and then an fd of the wrong kind where an eventfd belongs.
      r.hdr.aux ^= one_in(rng, 16) ? (one_in(rng, 2) ? fr::kAuxHungUp : fr::kAuxRegularFile) : 0;
      break;
    case 8:  // drop
      if (in.size() > 1) in.erase(in.begin() + static_cast<ptrdiff_t>(below(rng, in.size())));
      break;
    case 9: {  // duplicate, next to itself
      const size_t i = below(rng, in.size());
      in.insert(in.begin() + static_cast<ptrdiff_t>(i), in[i]);
      break;
    }
    case 10: {  // swap two
      std::swap(in[below(rng, in.size())], in[below(rng, in.size())]);
      break;
    }
    case 11: {  // splice: a prefix of this one, a suffix of the other
      if (other.empty()) break;
      const size_t cut = below(rng, in.size() + 1);
      const size_t from = below(rng, other.size());
      in.resize(cut);
      in.insert(in.end(), other.begin() + static_cast<ptrdiff_t>(from), other.end());
      break;
    }
    case 12: {  // one record of the other, inserted anywhere
      if (other.empty()) break;
      in.insert(in.begin() + static_cast<ptrdiff_t>(below(rng, in.size() + 1)), other[below(rng, other.size())]);
      break;
    }
    case 13: {  // a message cut short: its first bytes as they would go on the wire, and no more
      if (r.hdr.request >= fr::kActionBase) break;
      const vhu::Header h{r.hdr.request, r.hdr.flags, static_cast<uint32_t>(r.payload.size())};
      std::vector<uint8_t> wire(sizeof h);
      std::memcpy(wire.data(), &h, sizeof h);
      wire.insert(wire.end(), r.payload.begin(), r.payload.end());
      wire.resize(1 + below(rng, std::min(wire.size() - 1, fr::kMaxPayload)));
      r.hdr.request = fr::kActionRaw;
      r.payload = std::move(wire);
      break;
    }
    default: {  // a disconnect: the next records start a new session
      Record d;
      d.hdr.request = fr::kActionDisconnect;
      in.insert(in.begin() + static_cast<ptrdiff_t>(below(rng, in.size() + 1)), d);
      break;
    }
  }
}

}  // namespace

Input mutate(const Input& in, const Input& other, Rng& rng) {
  Input out = in;
  const size_t n = 1 + below(rng, 4);
  for (size_t i = 0; i < n; ++i) mutate_once(out, other, rng);
  if (out.size() > kMaxRecords) out.resize(kMaxRecords);
  if (out.empty()) out.push_back(Record{});
  for (auto& r : out) r.hdr.size = static_cast<uint16_t>(r.payload.size());
  return out;
}

}  // namespace conform::fuzz

#include "fuzz_mutate.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>

#include "vhu/messages.h"

namespace conform::fuzz {
namespace {

namespace fr = vhu::fuzz::framing;

std::vector<uint8_t> session() {
  std::vector<uint8_t> out;
  fr::append(out, {1, 1, 0, 0, 0}, {});
  fr::append_pod(out, {8, 1, 0, 0, 0}, vhu::VringState{0, 64});
  fr::append_pod(out, {fr::kActionPoke, 0, 0, 0, 0}, uint64_t{0x1000});
  return out;
}

TEST(FuzzMutate, ParseAndSerializeRoundTrip) {
  const auto bytes = session();
  const Input in = parse(bytes);
  ASSERT_EQ(in.size(), 3u);
  EXPECT_EQ(record_name(in[1]), "SET_VRING_NUM");
  EXPECT_EQ(record_name(in[2]), "poke");
  EXPECT_EQ(serialize(in), bytes);
}

TEST(FuzzMutate, ARecordCutShortEndsTheInput) {
  auto bytes = session();
  bytes.pop_back();
  EXPECT_EQ(parse(bytes).size(), 2u);
}

TEST(FuzzMutate, TheSeedFixesEveryChoice) {
  const Input in = parse(session());
  Rng a(7), b(7), c(8);
  bool differs = false;
  for (int i = 0; i < 200; ++i) {
    const Input x = mutate(in, in, a), y = mutate(in, in, b), z = mutate(in, in, c);
    EXPECT_EQ(serialize(x), serialize(y));
    differs = differs || serialize(x) != serialize(z);
  }
  EXPECT_TRUE(differs);
}

TEST(FuzzMutate, MutantsStayWithinTheFraming) {
  Input in = parse(session());
  Rng rng(1);
  for (int i = 0; i < 2000; ++i) {
    // Chains of 20 mutations from the seed: deep enough to stack every kind.
    in = mutate(i % 20 ? in : parse(session()), in, rng);
    ASSERT_FALSE(in.empty());
    ASSERT_LE(in.size(), kMaxRecords);
    for (const auto& r : in) {
      ASSERT_LE(r.payload.size(), fr::kMaxPayload);
      ASSERT_EQ(r.hdr.size, r.payload.size());
    }
    // What is written reads back as the same records.
    ASSERT_EQ(serialize(parse(serialize(in))), serialize(in));
  }
}

// A message cut short goes out raw: a strict prefix of its own wire bytes
// (header, then payload), so the back-end meets a close inside a message.
TEST(FuzzMutate, SomeMutantsCutAMessageShort) {
  const Input seed = parse(session());
  const vhu::VringState body{0, 64};
  std::vector<uint8_t> wire(sizeof(vhu::Header) + sizeof body);
  const vhu::Header h{8, 1, sizeof body};
  std::memcpy(wire.data(), &h, sizeof h);
  std::memcpy(wire.data() + sizeof h, &body, sizeof body);
  Rng rng(3);
  bool cut = false;
  for (int i = 0; i < 5000 && !cut; ++i) {
    for (const auto& r : mutate(seed, seed, rng)) {
      if (r.hdr.request != fr::kActionRaw || r.payload.size() < 9) continue;
      // Long enough to tell apart from garbage: the start of SET_VRING_NUM's wire form.
      if (r.payload.size() < wire.size() && std::equal(r.payload.begin(), r.payload.end(), wire.begin())) cut = true;
    }
  }
  EXPECT_TRUE(cut);
}

}  // namespace
}  // namespace conform::fuzz

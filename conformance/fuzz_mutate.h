// Inputs of the black-box fuzzer: the `vhost_user_messages` framing
// (vhu/fuzz_framing.h) parsed into records, and the mutations applied to them.
// Every choice comes from the generator passed in, so a run is fixed by its
// --seed and its corpus.
#pragma once

#include <cstdint>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "vhu/fuzz_framing.h"

namespace conform::fuzz {

struct Record {
  vhu::fuzz::framing::RecordHeader hdr{};
  std::vector<uint8_t> payload;
};
using Input = std::vector<Record>;

// Records in order; a record cut short ends the input, as in the fuzz target.
Input parse(std::span<const uint8_t> bytes);
std::vector<uint8_t> serialize(const Input& in);

using Rng = std::mt19937_64;

// Caps that keep one execution short.
inline constexpr size_t kMaxRecords = 256;

// One to four stacked mutations of `in`; `other` is a second corpus entry to
// splice from (may be the same). Never returns an empty input.
Input mutate(const Input& in, const Input& other, Rng& rng);

// "SET_VRING_ADDR", "kick", "poke": the name of a record's request or action.
std::string record_name(const Record& r);

}  // namespace conform::fuzz

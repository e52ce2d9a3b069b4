// Fuzz target `device_state_load`: the restore parser of the reference
// back-end (reference-backend/device_state.h), the code that reads whatever
// a migration source, or an attacker holding the pipe, sends with
// SET_DEVICE_STATE_FD (LOAD).
//
// Input: u8 mode, then the blob. With mode bit 0 set the last four bytes are
// overwritten with the blob's CRC-32, so mutations get past the checksum and
// reach the field checks behind it; with it clear the blob is parsed as given.
// Invariants: no crash or out-of-bounds read; a blob that parses serializes
// back to the very same bytes (the format has one encoding per state); and
// every state round-trips through serialize/parse.
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "device_state.h"
#include "fuzz_input.h"

namespace {

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  vhu::fuzz::Input in(data, size);
  const auto mode = in.take<uint8_t>();
  const auto rest = in.rest();
  std::vector<uint8_t> blob(rest.begin(), rest.end());
  if ((mode & 1) && blob.size() >= 4) {
    const uint32_t crc = vsockref::crc32(std::span<const uint8_t>(blob.data(), blob.size() - 4));
    for (int i = 0; i < 4; ++i) blob[blob.size() - 4 + i] = static_cast<uint8_t>(crc >> (8 * i));
  }
  auto parsed = vsockref::parse_device_state(blob);
  if (!parsed.ok()) {
    VHU_FUZZ_CHECK(!parsed.message().empty());  // a refusal always says why
    return 0;
  }
  const auto again = vsockref::serialize_device_state(*parsed);
  VHU_FUZZ_CHECK(again == blob);
  auto reparsed = vsockref::parse_device_state(again);
  VHU_FUZZ_CHECK(reparsed.ok() && *reparsed == *parsed);
  return 0;
}

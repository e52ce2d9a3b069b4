// Device state transfer as a front-end performs it (vhost-user "Migrating
// back-end state"): SET_DEVICE_STATE_FD with one end of a pipe, the data
// through whichever fd the reply designates, EOF, CHECK_DEVICE_STATE.
// Shared by the case families that need a saved or loaded back-end.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "case.h"

namespace conform {

// Saves the state of the (suspended) back-end on the current connection.
// Fails the case on any departure from the protocol or a non-zero CHECK.
std::vector<uint8_t> save_device_state(Ctx& ctx);

// Loads `blob` into the (suspended) back-end on the current connection.
// Fails the case unless CHECK_DEVICE_STATE answers 0.
void load_device_state(Ctx& ctx, std::span<const uint8_t> blob);

}  // namespace conform

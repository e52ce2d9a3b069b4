// Deliberate departures from the spec, for the conformance suite's self-test:
// every case must be able to fail, and these make it fail on purpose. Only
// the vhost-user-vsock-faulty binary (built with VHU_FAULT_INJECTION) can
// turn one on; in every other build VSOCKREF_FAULT() is the constant false,
// so the faulty branch is dead code the compiler drops.
#pragma once

#include <string>
#include <string_view>
#include <vector>

// X(name, one-line description)
#define VSOCKREF_FAULTS(X)                                                                              \
  X(get_vring_base_returns_zero, "GET_VRING_BASE replies 0 instead of the next avail index")          \
  X(ignore_need_reply, "no REPLY_ACK reply to requests that set need_reply")                          \
  X(wrong_reply_flags, "replies go out without the reply flag (bit 2)")                               \
  X(lose_kick_before_enable, "a kick that arrives before SET_VRING_ENABLE(1) is dropped")             \
  X(process_while_stopped, "keeps delivering rx packets while the rings are stopped (suspended)")     \
  X(call_while_suspended, "SET_VRING_CALL signals the new call fd even while suspended")              \
  X(device_state_error_with_fd, "SET_DEVICE_STATE_FD reports an error and also returns an fd")        \
  X(device_state_no_invalid_fd_flag, "SET_DEVICE_STATE_FD replies without bit 8 though no fd returns") \
  X(check_device_state_always_ok, "CHECK_DEVICE_STATE answers 0 even when the transfer failed")       \
  X(exceed_credit, "sends the guest more RW bytes than its credit allows")                            \
  X(rx_before_transport_reset, "puts packets on rx before the TRANSPORT_RESET event after a load")    \
  X(no_transport_reset, "never sends TRANSPORT_RESET after a load")                                   \
  X(accept_spoofed_src_cid, "accepts tx packets whose src_cid is not the guest's CID")                \
  X(rst_an_rst, "answers an RST for an unknown connection with an RST")                               \
  X(crash_on_bad_descriptor, "abort()s when a descriptor points outside guest memory")                \
  X(leak_extra_fds, "keeps (leaks) surplus fds attached to messages")                                 \
  X(mem_table_confuse_gpa_uva, "translates SET_VRING_ADDR ring addresses as guest-physical")

namespace vsockref {

enum class Fault {
#define VSOCKREF_X(name, text) name,
  VSOCKREF_FAULTS(VSOCKREF_X)
#undef VSOCKREF_X
      count_
};

struct FaultInfo {
  std::string_view name;
  std::string_view description;
};
// Every fault the list names, in order (empty in normal builds is not
// needed: --fault only exists in the faulty binary).
const std::vector<FaultInfo>& all_faults();

#ifdef VHU_FAULT_INJECTION
bool fault_enabled(Fault f);
// False when no fault has that name.
bool enable_fault(std::string_view name);
void clear_faults();
#define VSOCKREF_FAULT(name) (::vsockref::fault_enabled(::vsockref::Fault::name))
#else
#define VSOCKREF_FAULT(name) false
#endif

}  // namespace vsockref

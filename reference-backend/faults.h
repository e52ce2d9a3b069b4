// Deliberate departures from the spec, for the conformance suite's self-test:
// every case must be able to fail, and these make it fail on purpose. One
// (step_over_bad_chain) is a choice the spec allows beside ours, which the
// cases must accept as they accept ours. Only
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
  X(ignore_frontend_while_suspended, "after GET_VRING_BASE stopped every ring, drops front-end messages unanswered") \
  X(kick_restarts_stopped_ring, "keeps watching the old kick fd after GET_VRING_BASE; a kick there restarts the ring") \
  X(device_state_lax_params, "SET_DEVICE_STATE_FD succeeds with an unknown direction or phase, no fd, or unnegotiated") \
  X(save_never_closes, "after writing a saved state, keeps its end of the channel open (no EOF)")    \
  X(exceed_credit, "sends the guest more RW bytes than its credit allows")                            \
  X(bytes_only_credit, "meters host-to-guest by bytes only: as many small RW packets as the byte credit allows (libkrun #795)") \
  X(rx_before_transport_reset, "puts packets on rx before the TRANSPORT_RESET event after a load")    \
  X(no_transport_reset, "never sends TRANSPORT_RESET after a load")                                   \
  X(accept_spoofed_src_cid, "accepts tx packets whose src_cid is not the guest's CID")                \
  X(rst_an_rst, "answers an RST for an unknown connection with an RST")                               \
  X(crash_on_bad_descriptor, "abort()s when a descriptor points outside guest memory")                \
  X(step_over_bad_chain, "allowed, not a departure: returns a malformed chain unused (0 bytes) and goes on, where " \
                         "the reference back-end stops the ring; no case may fail")                  \
  X(silent_ring_error, "a malformed chain stops its ring with nothing reported: no err eventfd, no DEVICE_NEEDS_RESET") \
  X(silent_stop_on_loop, "steps over a malformed chain unless it loops; a looping chain stops its ring with " \
                         "nothing reported")                                                        \
  X(leak_extra_fds, "keeps (leaks) surplus fds attached to messages")                                 \
  X(mem_table_confuse_gpa_uva, "translates SET_VRING_ADDR ring addresses as guest-physical")             \
  X(drop_protocol_features_bit, "GET_FEATURES leaves out VHOST_USER_F_PROTOCOL_FEATURES (bit 30)")    \
  X(refuse_set_owner, "acks SET_OWNER non-zero (takes the first SET_OWNER for a second owner)")    \
  X(ack_only_after_set_features, "honours need_reply only once SET_FEATURES came (REPLY_ACK applied late)") \
  X(ack_only_after_get_protocol_features, "honours need_reply only if GET_PROTOCOL_FEATURES was asked on this connection") \
  X(reply_to_unhandled_request, "answers a request it does not handle with u64 1 even without need_reply") \
  X(ack_unhandled_request_zero, "acks a request it does not handle with 0 (success)")                 \
  X(no_ack_for_vring_enable, "SET_VRING_ENABLE with need_reply gets no ack")                          \
  X(ack_after_own_reply, "a request with its own reply and need_reply gets an extra ack after it")   \
  X(config_ignores_offset, "GET_CONFIG copies from the start of the config whatever the offset")     \
  X(config_bounds_in_32_bits, "GET_CONFIG adds offset and size in 32 bits, so a wrapping range passes") \
  X(forget_status, "SET_STATUS is acked but not stored: GET_STATUS keeps answering 0")               \
  X(keep_status_on_reset, "RESET_DEVICE leaves the device status as it was")                          \
  X(accept_fd_count_mismatch, "SET_MEM_TABLE with fewer fds than regions maps those with an fd, acks 0") \
  X(accept_zero_size_region, "acks a SET_MEM_TABLE region of size 0")                                 \
  X(accept_wrapping_region, "acks a SET_MEM_TABLE region whose gpa or uaddr range wraps past 2^64")   \
  X(accept_region_beyond_file, "acks a region whose mmap_offset + size lies past its file (SIGBUS later)") \
  X(accept_overlapping_regions, "acks SET_MEM_TABLE regions that overlap in guest-physical space")     \
  X(ignore_mmap_offset, "SET_MEM_TABLE maps every region from file offset 0, ignoring mmap_offset")  \
  X(keep_first_mem_table, "a second SET_MEM_TABLE is acked but the first table stays in use")        \
  X(keep_memory_on_disconnect, "a front-end disconnect leaves the old session's regions mapped")     \
  X(keep_rem_mem_reg_fd, "keeps (leaks) the fd that comes with REM_MEM_REG")                          \
  X(understate_max_mem_slots, "GET_MAX_MEM_SLOTS announces one slot fewer than ADD_MEM_REG enforces") \
  X(wrap_ring_index, "takes a ring index modulo the ring count instead of refusing it")             \
  X(accept_num_not_power_of_two, "SET_VRING_NUM checks the maximum but not the power of two")        \
  X(accept_num_too_large, "SET_VRING_NUM checks the power of two but not the 32768 maximum")         \
  X(accept_vring_addr_outside_memory, "acks SET_VRING_ADDR whose addresses no region holds")          \
  X(used_event_equals_new_idx, "with EVENT_IDX, calls only when the new used idx equals used_event: one entry early") \
  X(used_event_without_event_idx, "applies used_event to calls though VIRTIO_F_RING_EVENT_IDX was not negotiated") \
  X(no_log_base_reply, "SET_LOG_BASE gets no reply, as its entry's \"reply payload: N/A\" reads alone") \
  X(dirty_log_skips_buffers, "while logging, marks used-ring writes but not the guest buffers it writes") \
  X(dirty_log_skips_used_ring, "while logging, marks the guest buffers it writes but not the used ring") \
  X(keep_first_log, "a second SET_LOG_BASE is answered, but marks still go to the first log")        \
  X(ignore_log_offset, "maps SET_LOG_BASE's log from the start of its fd, whatever mmap_offset says")   \
  X(dirty_log_used_ring_by_ring_address, "while logging, marks used-ring writes at the ring's gpa, not at log_guest_addr") \
  X(keep_call_fd_on_nofd, "SET_VRING_CALL with the invalid-FD flag keeps signalling the old call fd") \
  X(keep_replaced_call_fd, "after SET_VRING_CALL with a new fd, the one it replaced is signalled too") \
  X(no_poll_without_kick_fd, "SET_VRING_KICK with the invalid-FD flag: the ring is never polled")   \
  X(start_ring_before_kick, "starts a ring at SET_VRING_KICK under the upstream text, before any kick") \
  X(wait_for_kick_newest, "under the newest text a ring still waits for its first kick")            \
  X(rx_on_disabled_ring, "puts packets on the rx ring while it is disabled")                          \
  X(need_enable_without_protocol_features, "rings wait for SET_VRING_ENABLE even without bit 30 acked") \
  X(ack_read_only_set_config, "acks SET_CONFIG of guest_cid with 0 whatever its flags (and keeps the CID)") \
  X(reserved_guest_cid, "GET_CONFIG of guest_cid's upper 32 bits (offset 4) shows them non-zero")    \
  X(corrupt_stream_at_64k, "alters the stream byte at offset 65536, in both directions")              \
  X(ignore_credit_request, "does not answer CREDIT_REQUEST with CREDIT_UPDATE")                       \
  X(no_credit_update, "never tells the guest about freed buffer space unless asked")                  \
  X(wrong_fwd_cnt, "reports fwd_cnt 4096 bytes ahead of what it really forwarded")                    \
  X(no_rst_unknown_connection, "silently drops packets for connections that do not exist")            \
  X(no_rst_closed_port, "silently drops a REQUEST to a host port nobody listens on")                  \
  X(no_rst_unknown_type, "silently drops packets whose type is unknown")                              \
  X(ignore_guest_shutdown, "ignores the guest's SHUTDOWN (the host never sees end of stream)")        \
  X(no_shutdown_to_guest, "never tells the guest that the host stopped sending")                      \
  X(half_close_is_close, "a host shutdown(SHUT_WR) reaches the guest as SHUTDOWN with RECEIVE too, as a close") \
  X(seqpacket_empty_is_end, "takes a host SEQPACKET message of no bytes for the host's end (SHUTDOWN to the guest)") \
  X(seqpacket_no_eom, "host-to-guest SEQPACKET messages lose their EOM/EOR flags")                    \
  X(route_outside_groups, "treats a packet for a CID outside the guest's groups as one for the host") \
  X(unbounded_tx_buffer, "buffers guest data beyond the credit it gave, without bound")               \
  X(connect_before_config_read, "delivers host CONNECTs right after TRANSPORT_RESET, before the config re-read") \
  X(sibling_before_config_read, "delivers a sibling VM's packets right after TRANSPORT_RESET, before the config re-read") \
  X(activate_on_early_config_read, "a config read before TRANSPORT_RESET was sent activates the device") \
  X(wait_for_event_ring, "after a load, stays inactive until it gets the event ring, even if it never comes") \
  X(no_event_ring_grace, "after a load, decides the front-end keeps the event ring as soon as rx and tx run") \
  X(spurious_transport_reset, "sends TRANSPORT_RESET without any load")                              \
  X(reset_keeps_pending_transport_reset, "a device reset leaves a pending TRANSPORT_RESET in place")  \
  X(hang_on_truncated_header, "a front-end that closes inside a message is never dropped; no new one is served") \
  X(trust_header_size, "waits for whatever payload size a header claims instead of closing")        \
  X(ignore_size_field, "reads the payload size its request takes, not the size the header says")   \
  X(accept_missing_fd, "SET_VRING_CALL/KICK/ERR with neither fd nor invalid-FD flag taken as no-fd") \
  X(no_reply_unready_ring, "GET_VRING_BASE for a ring that was never set up gets no reply")         \
  X(keep_rings_on_new_mem_table, "SET_MEM_TABLE does not re-translate running rings (stale mappings)") \
  X(small_rx_buffer_claims_header, "gives an rx buffer too small for a header, met in a batch read, a used length of 44") \
  X(write_past_rx_buffer, "writes the rx packet header into the first rx descriptor whatever its size or direction") \
  X(trust_vsock_hdr_len, "forwards hdr.len tx bytes from the first buffer even past its end")      \
  X(tx_waits_for_rx, "stops taking tx while it owes the guest a packet and rx has no buffer for it") \
  X(rx_first_descriptor_only, "fills an rx buffer framed over several descriptors as if its first were all of it") \
  X(tx_payload_in_one_descriptor, "drops a tx packet whose payload spans more than one descriptor (cloud-hypervisor #7672, libkrun #535)") \
  X(drop_fds_when_pipelined, "loses the fds of a SET_MEM_TABLE read in the same burst as the SET_OWNER before it") \
  X(block_on_connect_line, "reads a host CONNECT line with blocking reads, stalling the whole back-end") \
  X(stall_on_unready_rx, "stalls its loop 3 s when host traffic waits for an rx ring not started") \
  X(credit_update_before_response, "follows its REQUEST with a CREDIT_UPDATE before the guest's RESPONSE") \
  X(ignore_sigterm, "goes on serving after SIGTERM (SIGINT still ends it)")                          \
  X(daemonize, "forks once its sockets are set up; the parent exits 0 and the child serves")           \
  X(no_print_capabilities, "ignores --print-capabilities and starts serving as usual")                  \
  X(no_socket_path, "refuses --socket-path as an unknown option (only its own --socket names the socket)") \
  X(no_fd, "refuses --fd as an unknown option")                                                           \
  X(fd_assumes_3, "serves descriptor 3 whatever number --fd=FDNUM names, as systemd's first passed socket")

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

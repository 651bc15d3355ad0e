// The TLS handshakes in progress on the listener, at most a cap at a time. Each holds about
// 95 KiB (OpenSSL's and Asio's buffers) for as long as its client takes, so a client that opens
// connections and stalls mid-handshake must not be able to hold many of them.
//
// At the cap, the oldest handshake is closed to make room rather than the new one: a real client
// finishes in a few round trips, so the oldest is most likely one that stalled, and stalled
// clients then shut out new ones only by opening connections faster than a real handshake
// completes (refusing the new one would let them hold the listener with cap / deadline
// connections a second). A burst of real clients beyond the cap loses one connection per excess
// either way; they retry.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>

namespace regcache::http {

class HandshakeSlots {
 public:
  // A handshake's place; destroying it gives the place up (a no-op once it was closed to make
  // room).
  class Slot {
   public:
    ~Slot();
    Slot(const Slot&) = delete;
    Slot& operator=(const Slot&) = delete;

   private:
    friend class HandshakeSlots;
    Slot(HandshakeSlots* owner, uint64_t id) : owner_(owner), id_(id) {}
    HandshakeSlots* owner_;
    uint64_t id_;
  };

  // Takes a place for a handshake that `close` ends. With `cap` (at least 1) places taken, the
  // oldest one's `close` runs first — on this thread, after the lock is released, so it must
  // only hand the close to the connection's own thread — and *evicted is set.
  std::unique_ptr<Slot> Enter(size_t cap, std::function<void()> close, bool* evicted);

  size_t in_progress() const;

 private:
  void Leave(uint64_t id);

  mutable std::mutex mu_;
  std::map<uint64_t, std::function<void()>> slots_;  // by id: the oldest first
  uint64_t next_id_ = 0;
};

}  // namespace regcache::http

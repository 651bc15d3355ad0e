#include "http/handshake_slots.h"

namespace regcache::http {

HandshakeSlots::Slot::~Slot() { owner_->Leave(id_); }

std::unique_ptr<HandshakeSlots::Slot> HandshakeSlots::Enter(size_t cap, std::function<void()> close,
                                                            bool* evicted) {
  *evicted = false;
  std::function<void()> victim;
  uint64_t id;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (slots_.size() >= (cap == 0 ? 1 : cap)) {
      auto oldest = slots_.begin();
      victim = std::move(oldest->second);
      slots_.erase(oldest);
      *evicted = true;
    }
    id = next_id_++;
    slots_.emplace(id, std::move(close));
  }
  if (victim) victim();
  return std::unique_ptr<Slot>(new Slot(this, id));
}

void HandshakeSlots::Leave(uint64_t id) {
  std::lock_guard<std::mutex> lock(mu_);
  slots_.erase(id);
}

size_t HandshakeSlots::in_progress() const {
  std::lock_guard<std::mutex> lock(mu_);
  return slots_.size();
}

}  // namespace regcache::http

// One upstream download of one blob, shared by every client that asks for it meanwhile.
//
// The fill writes to a temp file; readers pread the same file through a descriptor the fill holds
// open (so the final rename does not disturb them) and wait for progress when they catch up.
// Readers may take every byte except the blob's last one until the fill has verified the digest
// and committed: a client can never receive a complete, unverified blob. When a fill fails, its
// readers are cut off (their Content-Length is not met, so they retry) and the next request
// starts a new fill.
#pragma once

#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <vector>

#include "base/status.h"
#include "oci/digest.h"

namespace regcache::cache {

class Fill {
 public:
  Fill(oci::Digest digest, uint64_t size, int read_fd);
  ~Fill();
  Fill(const Fill&) = delete;
  Fill& operator=(const Fill&) = delete;

  const oci::Digest& digest() const { return digest_; }
  // The descriptor readers may pread/sendfile from (valid for the life of the Fill).
  int fd() const { return fd_; }
  uint64_t size() const { return size_; }

  // Writer side.
  void Progress(uint64_t written);
  void Complete(Status status);  // ok: verified and committed

  // Reader side.
  struct State {
    uint64_t readable = 0;  // bytes a reader may take now (last byte held until verified)
    bool done = false;
    Status status;
  };
  State Snapshot();
  // Reads up to `max` bytes at `offset` from the (temp or committed) file.
  Result<size_t> ReadAt(char* buf, size_t max, uint64_t offset);
  // Calls `wake` once, on the next progress or completion; at once if `seen` is already stale
  // (the state moved past what the caller saw), so no wake-up is ever lost.
  void WaitForChange(uint64_t seen_readable, std::function<void()> wake);

 private:
  const oci::Digest digest_;
  const uint64_t size_;
  const int fd_;
  std::mutex mu_;
  uint64_t written_ = 0;
  bool done_ = false;
  Status status_;
  std::vector<std::function<void()>> waiters_;
};

}  // namespace regcache::cache

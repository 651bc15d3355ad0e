// One upstream download of one blob, shared by every client that asks for it meanwhile.
//
// The fill writes to a temp file; readers pread the same file through a descriptor the fill holds
// open (so the final rename does not disturb them) and wait for progress when they catch up.
// The blob's size is the upstream's own answer for this digest (Start), known before any reader
// sends a status line: a client is never answered 200 before upstream answered, and never with a
// length taken from some repository's descriptor. Readers may take every byte except the blob's
// last one until the fill has verified the digest and committed: a client can never receive a
// complete, unverified blob. When a fill fails, its readers are cut off (their Content-Length is
// not met, so they retry) and the next request starts a new fill.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "base/status.h"
#include "oci/digest.h"

namespace regcache::cache {

class Fill {
 public:
  // `repo` is the repository the download goes through (upstream-side name).
  Fill(oci::Digest digest, std::string repo, int read_fd);
  ~Fill();
  Fill(const Fill&) = delete;
  Fill& operator=(const Fill&) = delete;

  const oci::Digest& digest() const { return digest_; }
  const std::string& repo() const { return repo_; }
  // The descriptor readers may pread/sendfile from (valid for the life of the Fill).
  int fd() const { return fd_; }

  // Writer side: Start once upstream answered with the blob's size, then Progress, then
  // Complete (ok: verified and committed). Complete without Start is a failure before any byte.
  void Start(uint64_t size);
  void Progress(uint64_t written);
  void Complete(Status status);

  // Memory mode, for a blob that will not be stored (no room under the cap, or no space on the
  // file system): bytes go to a window in memory instead of the file, at most `window` bytes
  // past the slowest reader. Set before the first Progress; readers then use CopyOut.
  void UseMemory(size_t window);
  bool memory();
  // Writer side of memory mode: appends, waiting up to `stall` for the slowest reader to make
  // room; a reader that does not within it is cut off (its CopyOut fails).
  Status WriteMemory(const char* data, size_t n, std::chrono::milliseconds stall);
  // Reader side of memory mode. A reader that joins after the window moved past `offset` gets
  // kUnavailable from CopyOut.
  int AddReader(uint64_t offset);
  void ReaderProgress(int id, uint64_t offset);
  void RemoveReader(int id);
  // Copies up to `max` readable bytes at `offset` from the window.
  Result<size_t> CopyOut(int reader, uint64_t offset, char* buf, size_t max);
  // Where the window starts: once past 0, a new reader can no longer join from the beginning.
  uint64_t window_start();

  // Reader side.
  struct State {
    bool started = false;   // upstream answered; `size` is known
    uint64_t size = 0;
    uint64_t readable = 0;  // bytes a reader may take now (last byte held until verified)
    bool done = false;
    Status status;
  };
  State Snapshot();
  // Reads up to `max` bytes at `offset` from the (temp or committed) file.
  Result<size_t> ReadAt(char* buf, size_t max, uint64_t offset);
  // Calls `wake` once, on the next start, progress or completion; at once if the state already
  // moved past `seen`, so no wake-up is ever lost. Every pending `wake` runs by Complete.
  void WaitForChange(const State& seen, std::function<void()> wake);

 private:
  State SnapshotLocked() const;

  const oci::Digest digest_;
  const std::string repo_;
  const int fd_;
  std::mutex mu_;
  bool started_ = false;
  uint64_t size_ = 0;
  uint64_t written_ = 0;
  bool done_ = false;
  Status status_;
  std::vector<std::function<void()>> waiters_;
  // Memory mode.
  bool memory_ = false;
  size_t window_ = 0;
  std::string buffer_;      // bytes [buffer_start_, written_)
  uint64_t buffer_start_ = 0;
  std::map<int, uint64_t> readers_;  // id -> offset; absent: cut off or gone
  int next_reader_ = 0;
  std::condition_variable room_;
};

}  // namespace regcache::cache

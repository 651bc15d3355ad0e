#include "cache/fill.h"

#include <unistd.h>

#include <cerrno>
#include <algorithm>
#include <cstring>

namespace regcache::cache {

Fill::Fill(oci::Digest digest, std::string repo, int read_fd)
    : digest_(std::move(digest)), repo_(std::move(repo)), fd_(read_fd) {}

Fill::~Fill() {
  if (fd_ >= 0) ::close(fd_);
}

void Fill::Start(uint64_t size) {
  std::vector<std::function<void()>> wake;
  {
    std::lock_guard<std::mutex> lock(mu_);
    started_ = true;
    size_ = size;
    wake.swap(waiters_);
  }
  for (auto& w : wake) w();
}

void Fill::Progress(uint64_t written) {
  std::vector<std::function<void()>> wake;
  {
    std::lock_guard<std::mutex> lock(mu_);
    written_ = written;
    wake.swap(waiters_);
  }
  for (auto& w : wake) w();
}

void Fill::Complete(Status status) {
  std::vector<std::function<void()>> wake;
  {
    std::lock_guard<std::mutex> lock(mu_);
    done_ = true;
    if (status.ok() && !started_) status = Internal("fill completed without a size");
    status_ = std::move(status);
    wake.swap(waiters_);
  }
  for (auto& w : wake) w();
}

Fill::State Fill::SnapshotLocked() const {
  State s;
  s.started = started_;
  s.size = size_;
  s.done = done_;
  s.status = status_;
  if (done_ && status_.ok()) {
    s.readable = size_;
  } else if (!done_ && started_) {
    s.readable = size_ == 0 ? 0 : std::min(written_, size_ - 1);
  }
  return s;
}

Fill::State Fill::Snapshot() {
  std::lock_guard<std::mutex> lock(mu_);
  return SnapshotLocked();
}

Result<size_t> Fill::ReadAt(char* buf, size_t max, uint64_t offset) {
  while (true) {
    ssize_t n = ::pread(fd_, buf, max, static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0)
      return IoError(std::string("reading fill of ") + digest_.str() + ": " + std::strerror(errno));
    return static_cast<size_t>(n);
  }
}

void Fill::UseMemory(size_t window) {
  std::lock_guard<std::mutex> lock(mu_);
  memory_ = true;
  window_ = window;
}

bool Fill::memory() {
  std::lock_guard<std::mutex> lock(mu_);
  return memory_;
}

Status Fill::WriteMemory(const char* data, size_t n, std::chrono::milliseconds stall) {
  std::vector<std::function<void()>> wake;
  {
    std::unique_lock<std::mutex> lock(mu_);
    auto slowest = [&] {
      uint64_t low = written_;
      for (const auto& [id, offset] : readers_) low = std::min(low, offset);
      return low;
    };
    auto has_room = [&] { return written_ - slowest() + n <= window_ || readers_.empty(); };
    if (!room_.wait_for(lock, stall, has_room)) {
      // Whoever holds the window back past the stall limit is dropped, not everyone else.
      const uint64_t low = slowest();
      for (auto it = readers_.begin(); it != readers_.end();) {
        it = it->second == low ? readers_.erase(it) : std::next(it);
      }
    }
    // Drop what every reader has taken (all of it when nobody reads: no one can join later).
    const uint64_t keep_from = slowest();
    if (keep_from > buffer_start_) {
      buffer_.erase(0, static_cast<size_t>(keep_from - buffer_start_));
      buffer_start_ = keep_from;
    }
    buffer_.append(data, n);
    written_ += n;
    wake.swap(waiters_);
  }
  for (auto& w : wake) w();
  return Status::Ok();
}

int Fill::AddReader(uint64_t offset) {
  std::lock_guard<std::mutex> lock(mu_);
  int id = next_reader_++;
  if (offset >= buffer_start_) readers_[id] = offset;
  return id;
}

void Fill::ReaderProgress(int id, uint64_t offset) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = readers_.find(id);
    if (it == readers_.end()) return;
    it->second = offset;
  }
  room_.notify_all();
}

void Fill::RemoveReader(int id) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    readers_.erase(id);
  }
  room_.notify_all();
}

Result<size_t> Fill::CopyOut(int reader, uint64_t offset, char* buf, size_t max) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!readers_.count(reader) || offset < buffer_start_) {
    return Unavailable("fell behind a download that is not being stored");
  }
  State s = SnapshotLocked();
  if (offset >= s.readable) return size_t{0};
  size_t n = static_cast<size_t>(std::min<uint64_t>(max, s.readable - offset));
  std::memcpy(buf, buffer_.data() + (offset - buffer_start_), n);
  return n;
}

uint64_t Fill::window_start() {
  std::lock_guard<std::mutex> lock(mu_);
  return buffer_start_;
}

void Fill::WaitForChange(const State& seen, std::function<void()> wake) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    State now = SnapshotLocked();
    if (now.started == seen.started && now.readable == seen.readable && now.done == seen.done) {
      waiters_.push_back(std::move(wake));
      return;
    }
  }
  wake();
}

}  // namespace regcache::cache

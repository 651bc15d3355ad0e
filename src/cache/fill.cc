#include "cache/fill.h"

#include <unistd.h>

#include <cerrno>
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

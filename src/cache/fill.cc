#include "cache/fill.h"

#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace regcache::cache {

Fill::Fill(oci::Digest digest, uint64_t size, int read_fd)
    : digest_(std::move(digest)), size_(size), fd_(read_fd) {}

Fill::~Fill() {
  if (fd_ >= 0) ::close(fd_);
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
    status_ = std::move(status);
    wake.swap(waiters_);
  }
  for (auto& w : wake) w();
}

Fill::State Fill::Snapshot() {
  std::lock_guard<std::mutex> lock(mu_);
  State s;
  s.done = done_;
  s.status = status_;
  if (done_ && status_.ok()) {
    s.readable = size_;
  } else if (!done_) {
    s.readable = size_ == 0 ? 0 : std::min(written_, size_ - 1);
  }
  return s;
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

void Fill::WaitForChange(uint64_t seen_readable, std::function<void()> wake) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    uint64_t readable = done_ ? size_ : (size_ == 0 ? 0 : std::min(written_, size_ - 1));
    if (!done_ && readable == seen_readable) {
      waiters_.push_back(std::move(wake));
      return;
    }
  }
  wake();
}

}  // namespace regcache::cache

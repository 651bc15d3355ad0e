#include "copy/blob_pipe.h"

#include <algorithm>
#include <cstring>

namespace regcache::copy {

BlobPipe::BlobPipe(size_t capacity, uint64_t total_size) : ring_(capacity), total_(total_size) {}

Status BlobPipe::Write(const char* data, size_t size) {
  std::unique_lock<std::mutex> lock(mu_);
  while (size > 0) {
    cv_.wait(lock, [&] { return cancelled_ || size_ < ring_.size(); });
    if (cancelled_)
      return Status(Code::kAborted, "upload side stopped: " + cancel_status_.message());
    size_t tail = (head_ + size_) % ring_.size();
    size_t n = std::min({size, ring_.size() - size_, ring_.size() - tail});
    std::memcpy(ring_.data() + tail, data, n);
    size_ += n;
    data += n;
    size -= n;
    cv_.notify_all();
  }
  return Status::Ok();
}

void BlobPipe::Finish(Status status) {
  std::lock_guard<std::mutex> lock(mu_);
  finished_ = true;
  finish_status_ = std::move(status);
  cv_.notify_all();
}

Result<size_t> BlobPipe::Read(char* buf, size_t max) {
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    if (cancelled_) return cancel_status_;
    if (finished_ && !finish_status_.ok()) return finish_status_;
    const bool verified = finished_ && finish_status_.ok();
    // Without verification, everything but the final byte of the blob may go out.
    uint64_t allowed = size_;
    if (!verified && total_ > 0) {
      uint64_t before_last = total_ - 1 > consumed_ ? total_ - 1 - consumed_ : 0;
      allowed = std::min<uint64_t>(allowed, before_last);
    }
    if (allowed > 0 && max > 0) {
      size_t n = static_cast<size_t>(std::min<uint64_t>({allowed, max, ring_.size() - head_}));
      std::memcpy(buf, ring_.data() + head_, n);
      head_ = (head_ + n) % ring_.size();
      size_ -= n;
      consumed_ += n;
      cv_.notify_all();
      return n;
    }
    if (verified && size_ == 0) return size_t{0};
    cv_.wait(lock);
  }
}

void BlobPipe::Cancel(Status why) {
  std::lock_guard<std::mutex> lock(mu_);
  cancelled_ = true;
  cancel_status_ = std::move(why);
  cv_.notify_all();
}

}  // namespace regcache::copy

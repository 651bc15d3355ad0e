// A bounded byte pipe between a blob download (producer) and an upload (consumer) running on
// two threads. Memory is `capacity` bytes whatever the blob size.
//
// The pipe withholds the blob's final byte from the consumer until the producer has verified the
// digest (Finish(Ok)). An upload with a declared Content-Length therefore cannot complete on
// unverified content: if verification fails, the consumer gets the error instead of the last
// byte, aborts, and the destination never commits the blob.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <vector>

#include "base/status.h"

namespace regcache::copy {

class BlobPipe {
 public:
  BlobPipe(size_t capacity, uint64_t total_size);

  // Producer: copies all of data in, blocking while full. Fails (kAborted) once Cancel was called.
  Status Write(const char* data, size_t size);
  // Producer: no more data. Ok means every byte was written and verified.
  void Finish(Status status);

  // Consumer: up to `max` bytes, blocking until some are available; 0 at the verified end; the
  // producer's error if it failed; the Cancel reason if cancelled.
  Result<size_t> Read(char* buf, size_t max);
  // Consumer: stop; a blocked producer wakes with kAborted.
  void Cancel(Status why);

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<char> ring_;
  size_t head_ = 0;  // next read position
  size_t size_ = 0;  // bytes buffered
  uint64_t total_;
  uint64_t consumed_ = 0;
  bool finished_ = false;
  Status finish_status_;
  bool cancelled_ = false;
  Status cancel_status_;
};

}  // namespace regcache::copy

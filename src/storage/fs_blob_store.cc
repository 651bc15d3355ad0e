#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "base/strings.h"
#include "storage/fs_blob_store_impl.h"

namespace regcache::storage {
namespace {

namespace fs = std::filesystem;

Status Errno(const std::string& what) { return IoError(what + ": " + std::strerror(errno)); }

constexpr const char* kNoSpace = "no space left on device:";

class FsBlobWriter : public BlobWriter {
 public:
  FsBlobWriter(int fd, std::string temp, std::string final_path)
      : fd_(fd), temp_(std::move(temp)), final_(std::move(final_path)) {}
  ~FsBlobWriter() override { Abort(); }

  Status Write(const char* data, size_t size) override {
    if (fd_ < 0) return IoError("blob writer is closed");
    while (size > 0) {
      ssize_t n = ::write(fd_, data, size);
      if (n < 0) {
        if (errno == EINTR) continue;
        Status s = errno == ENOSPC ? IoError(std::string(kNoSpace) + " writing " + temp_)
                                   : Errno("writing " + temp_);
        Abort();
        return s;
      }
      data += n;
      size -= static_cast<size_t>(n);
      written_ += static_cast<uint64_t>(n);
    }
    return Status::Ok();
  }

  uint64_t written() const override { return written_; }
  const std::string& temp_path() const override { return temp_; }

  Status Commit(uint64_t expected_size) override {
    if (fd_ < 0) return IoError("blob writer is closed");
    if (written_ != expected_size) {
      Abort();
      return Integrity("wrote " + std::to_string(written_) + " bytes, expected " +
                       std::to_string(expected_size));
    }
    if (::fsync(fd_) != 0) {
      Status s = errno == ENOSPC ? IoError(std::string(kNoSpace) + " fsync " + temp_)
                                 : Errno("fsync " + temp_);
      Abort();
      return s;
    }
    ::close(fd_);
    fd_ = -1;
    std::error_code ec;
    fs::create_directories(fs::path(final_).parent_path(), ec);
    if (::rename(temp_.c_str(), final_.c_str()) != 0) {
      Status s = Errno("rename to " + final_);
      ::unlink(temp_.c_str());
      return s;
    }
    committed_ = true;
    return Status::Ok();
  }

  void Abort() override {
    if (fd_ >= 0) {
      ::close(fd_);
      fd_ = -1;
    }
    if (!committed_ && !aborted_) {
      ::unlink(temp_.c_str());
      aborted_ = true;
    }
  }

 private:
  int fd_;
  std::string temp_;
  std::string final_;
  uint64_t written_ = 0;
  bool committed_ = false;
  bool aborted_ = false;
};

}  // namespace

FsBlobStore::FsBlobStore(std::string root) : root_(std::move(root)) {}

Status FsBlobStore::Init() {
  std::error_code ec;
  fs::create_directories(root_ + "/blobs", ec);
  if (ec) return IoError("cannot create " + root_ + "/blobs: " + ec.message());
  // Whatever a crash left half-written is garbage: it was never visible, so delete it.
  fs::remove_all(root_ + "/tmp", ec);
  fs::create_directories(root_ + "/tmp", ec);
  if (ec) return IoError("cannot create " + root_ + "/tmp: " + ec.message());
  return Status::Ok();
}

std::string FsBlobStore::PathFor(const oci::Digest& d) const {
  const char* algo = d.algorithm() == oci::DigestAlgorithm::kSha256 ? "sha256" : "sha512";
  std::string path = root_ + "/blobs/" + algo + "/";
  path.append(d.hex().substr(0, 2)).push_back('/');
  return path.append(d.hex());
}

Result<std::optional<uint64_t>> FsBlobStore::Stat(const oci::Digest& digest) {
  struct stat st;
  if (::stat(PathFor(digest).c_str(), &st) != 0) {
    if (errno == ENOENT) return std::optional<uint64_t>();
    return Errno("stat " + PathFor(digest));
  }
  return std::optional<uint64_t>(static_cast<uint64_t>(st.st_size));
}

Result<int> FsBlobStore::Open(const oci::Digest& digest) {
  int fd = ::open(PathFor(digest).c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return NotFound("blob " + digest.str() + " is not stored");
    return Errno("open " + PathFor(digest));
  }
  return fd;
}

Result<std::string> FsBlobStore::ReadAll(const oci::Digest& digest, size_t max_bytes) {
  RC_ASSIGN_OR_RETURN(int fd, Open(digest));
  std::string out;
  char buf[65536];
  while (true) {
    ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      Status s = Errno("read " + PathFor(digest));
      ::close(fd);
      return s;
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
    if (out.size() > max_bytes) {
      ::close(fd);
      return IoError("stored blob " + digest.str() + " is larger than expected");
    }
  }
  ::close(fd);
  return out;
}

Result<std::unique_ptr<BlobWriter>> FsBlobStore::Ingest(const oci::Digest& digest) {
  // Appended piece by piece: "." + std::string&& trips GCC 12's -Wrestrict false positive at -O3
  // (see Reference::String in oci/reference.cc).
  std::string temp = root_ + "/tmp/";
  temp.append(digest.hex().substr(0, 16)).append(1, '.').append(std::to_string(::getpid()));
  temp.append(1, '.').append(std::to_string(temp_counter_++));
  int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) return Errno("create " + temp);
  return std::unique_ptr<BlobWriter>(new FsBlobWriter(fd, temp, PathFor(digest)));
}

Status FsBlobStore::PutSmall(const oci::Digest& digest, const std::string& bytes) {
  RC_ASSIGN_OR_RETURN(auto writer, Ingest(digest));
  RC_RETURN_IF_ERROR(writer->Write(bytes.data(), bytes.size()));
  return writer->Commit(bytes.size());
}

Status FsBlobStore::Remove(const oci::Digest& digest) {
  if (::unlink(PathFor(digest).c_str()) != 0 && errno != ENOENT) {
    return Errno("unlink " + PathFor(digest));
  }
  return Status::Ok();
}

Status FsBlobStore::Scan(const std::function<void(const oci::Digest&, uint64_t size)>& found) {
  std::error_code ec;
  for (const char* algo : {"sha256", "sha512"}) {
    fs::path dir = fs::path(root_) / "blobs" / algo;
    if (!fs::exists(dir, ec)) continue;
    for (auto it = fs::recursive_directory_iterator(dir, ec);
         !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
      if (!it->is_regular_file(ec)) continue;
      auto digest = oci::Digest::Parse(std::string(algo) + ":" + it->path().filename().string());
      if (!digest.ok()) continue;
      uint64_t size = it->file_size(ec);
      if (ec) {
        ec.clear();
        continue;  // removed meanwhile
      }
      found(*digest, size);
    }
    if (ec) return IoError("scanning " + dir.string() + ": " + ec.message());
  }
  return Status::Ok();
}

Result<BlobStore::Space> FsBlobStore::FilesystemSpace() {
  struct statvfs st;
  if (::statvfs(root_.c_str(), &st) != 0) return Errno("statvfs " + root_);
  Space s;
  s.total = static_cast<uint64_t>(st.f_blocks) * st.f_frsize;
  s.available = static_cast<uint64_t>(st.f_bavail) * st.f_frsize;
  return s;
}

bool IsNoSpace(const Status& status) {
  return status.code() == Code::kIoError && StartsWith(status.message(), kNoSpace);
}

Result<std::unique_ptr<BlobStore>> OpenFilesystemBlobStore(const std::string& root) {
  auto store = std::make_unique<FsBlobStore>(root);
  RC_RETURN_IF_ERROR(store->Init());
  return std::unique_ptr<BlobStore>(std::move(store));
}

}  // namespace regcache::storage

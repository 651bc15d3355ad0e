// TLS on the listener of `regcache serve`: the OpenSSL context built from certificate and key
// files, and rebuilt when they change (SIGHUP, or a renewal seen by polling the files).
#pragma once

#include <sys/types.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include "base/status.h"

namespace boost::asio::ssl {
class context;
}

namespace regcache::http {

struct TlsOptions {
  std::string cert;       // PEM: the server certificate, then its intermediates (a full chain)
  std::string key;        // PEM private key, not encrypted
  std::string client_ca;  // optional PEM CA certificates: clients must present a certificate
                          // issued by one of them (mutual TLS)
  // How often the files are checked for a change (inode, size, modification time); a change is
  // loaded once the files have stayed the same for one more interval. 0: only on SIGHUP.
  std::chrono::seconds watch_interval{5};
  // From accept to the end of the handshake (at most idle_timeout): a real client needs a few
  // round trips; a stalled one holds a connection and, once its ClientHello is in, about 95 KiB
  // of OpenSSL and Asio buffers.
  std::chrono::seconds handshake_timeout{5};
  // Handshakes in progress at once (past the ClientHello); beyond, the oldest is closed.
  size_t max_handshakes = 256;

  // Any file given turns TLS on (and then the certificate and the key are both required).
  bool enabled() const { return !cert.empty() || !key.empty() || !client_ca.empty(); }
  bool operator==(const TlsOptions&) const = default;
};

// The first byte of a TLS handshake record: every TLS connection opens with one (the ClientHello).
inline constexpr unsigned char kTlsHandshakeRecord = 0x16;

// A fatal handshake_failure alert (RFC 8446 6.2: record type 21 = alert, then length 2, level 2 =
// fatal, description 40), sent as the record version ClientHellos carry (3.1) so that a client
// parses it before any version was negotiated.
inline constexpr std::array<char, 7> kTlsHandshakeFailureAlert = {0x15, 0x03, 0x01, 0x00,
                                                                  0x02, 0x02, 0x28};

// The bytes of the TLS record that `first_bytes` begins with (5 bytes of header and its body),
// once its header is in: 0 while fewer than 5 bytes are; nullopt for a header no TLS client
// sends (a length of 0 or above 2^14, RFC 8446 5.1).
std::optional<size_t> TlsRecordBytes(std::string_view first_bytes);

// Where a certificate stands at `now` (seconds since the epoch): a warning is due within
// kCertificateWarning of its expiry.
enum class CertificateState { kValid, kExpiresSoon, kExpired };
inline constexpr std::chrono::hours kCertificateWarning{24 * 7};
CertificateState CertificateStateAt(int64_t not_after, int64_t now);

// ALPN (RFC 7301): the protocol this server speaks, if the client's list offers it. `offered` is
// the list as sent: each name preceded by its length in one byte.
std::optional<std::string_view> ChooseAlpn(std::string_view offered);

// The context new TLS connections use. A reload replaces it only with one that loaded
// completely; connections keep the context they began with (they hold the shared_ptr).
// Thread-safe.
class TlsContexts {
 public:
  // Loads the files. An error names the file and what is wrong with it.
  static Result<std::unique_ptr<TlsContexts>> Create(TlsOptions options);
  ~TlsContexts();

  std::shared_ptr<boost::asio::ssl::context> Current() const;
  // The certificate being served: subject, serial number, expiry (or "EXPIRED on …" if it has).
  std::string Describe() const;
  // When the certificate being served expires (seconds since the epoch).
  int64_t NotAfter() const;
  bool client_certificates() const;
  std::chrono::seconds watch_interval() const;
  std::chrono::seconds handshake_timeout() const;
  size_t max_handshakes() const;

  // Reads the files again (with `options`, other files from now on). On failure the current
  // context (and files) stay, and the error says why.
  Status Reload(std::optional<TlsOptions> options = std::nullopt);
  // For polling: reloads when the files changed since they were last loaded and have not changed
  // since the previous call, so a renewal that writes the certificate and the key one after the
  // other is loaded once, complete. Files that failed to load are not tried again until they
  // change. nullopt: nothing was tried.
  std::optional<Status> ReloadIfChanged();

  struct FileStamp {
    dev_t dev = 0;
    ino_t ino = 0;
    off_t size = -1;
    int64_t mtime_ns = 0;
    int error = 0;  // errno of stat
    bool operator==(const FileStamp&) const = default;
  };
  using Stamps = std::array<FileStamp, 3>;  // cert, key, client CA

  struct Loaded;

 private:
  TlsContexts() = default;
  Status LoadLocked(const TlsOptions& options);

  mutable std::mutex mu_;
  std::mutex load_mu_;  // one load at a time (SIGHUP and polling may coincide)
  TlsOptions options_;
  std::shared_ptr<const Loaded> loaded_;
  Stamps loaded_stamps_{};
  Stamps seen_stamps_{};    // at the previous poll
  Stamps failed_stamps_{};  // of the files that last failed to load
};

}  // namespace regcache::http

#include "http/tls.h"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <sys/stat.h>

#include <boost/asio/ssl/context.hpp>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <fstream>
#include <functional>
#include <sstream>

namespace regcache::http {

struct TlsContexts::Loaded {
  std::shared_ptr<boost::asio::ssl::context> context;
  std::string subject;  // "subject CN=…, serial …"
  std::string expiry;   // "2027-01-31 12:00:00 UTC"
  std::string extra;    // what else to say, e.g. about client certificates
  int64_t not_after = 0;
  bool client_certificates = false;
};

namespace {

namespace ssl = boost::asio::ssl;

// TLS 1.2 suites: ECDHE key exchange (forward secrecy) with AEAD ciphers only. TLS 1.3 keeps
// OpenSSL's defaults, which are all of that kind.
constexpr const char* kTls12Ciphers = "ECDHE+AESGCM:ECDHE+CHACHA20";

template <auto Free>
struct Deleter {
  template <typename T>
  void operator()(T* p) const {
    Free(p);
  }
};
using BioPtr = std::unique_ptr<BIO, Deleter<BIO_free>>;
using X509Ptr = std::unique_ptr<X509, Deleter<X509_free>>;
using BignumPtr = std::unique_ptr<BIGNUM, Deleter<BN_free>>;

Result<std::string> ReadFile(const std::string& path, const std::string& what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return InvalidArgument(what + " " + path + ": cannot read it: " + std::strerror(errno));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// What went wrong in OpenSSL, without its error-code prefix; clears its error queue.
std::string OpenSslError(const boost::system::error_code& ec) {
  std::string message = ec.message();
  ERR_clear_error();
  return message;
}

int SelectAlpn(SSL*, const unsigned char** out, unsigned char* outlen, const unsigned char* in,
               unsigned int inlen, void*) {
  auto chosen = ChooseAlpn(std::string_view(reinterpret_cast<const char*>(in), inlen));
  // RFC 7301 3.2: a client that offers only protocols this server does not speak (e.g. just h2)
  // is told so with a no_application_protocol alert.
  if (!chosen) return SSL_TLSEXT_ERR_ALERT_FATAL;
  *out = reinterpret_cast<const unsigned char*>(chosen->data());
  *outlen = static_cast<unsigned char>(chosen->size());
  return SSL_TLSEXT_ERR_OK;
}

std::string Print(const std::function<int(BIO*)>& print) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || print(bio.get()) <= 0) return "?";
  char* data = nullptr;
  long n = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(n));
}

// "subject CN=…, serial …" into loaded->subject, the expiry into ->expiry and ->not_after.
void DescribeCertificate(X509* cert, TlsContexts::Loaded* loaded) {
  std::string subject = Print([cert](BIO* b) {
    return X509_NAME_print_ex(b, X509_get_subject_name(cert), 0, XN_FLAG_RFC2253);
  });
  std::string serial = "?";
  BignumPtr bn(ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert), nullptr));
  if (bn) {
    char* hex = BN_bn2hex(bn.get());
    if (hex) serial = hex;
    OPENSSL_free(hex);
  }
  loaded->subject = "subject " + subject + ", serial " + serial;
  loaded->expiry = "?";
  struct tm tm {};
  if (ASN1_TIME_to_tm(X509_get0_notAfter(cert), &tm) == 1) {
    loaded->not_after = static_cast<int64_t>(timegm(&tm));
    char text[32];
    std::strftime(text, sizeof text, "%Y-%m-%d %H:%M:%S UTC", &tm);
    loaded->expiry = text;
  }
}

// Adds every certificate in `pem` as a CA that client certificates must chain to, and names it
// to clients as acceptable; how many there were.
int AddClientCas(SSL_CTX* ctx, const std::string& pem) {
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  int count = 0;
  while (bio) {
    X509Ptr cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
    if (!cert) break;
    if (X509_STORE_add_cert(SSL_CTX_get_cert_store(ctx), cert.get()) != 1 ||
        SSL_CTX_add_client_CA(ctx, cert.get()) != 1) {
      return -1;
    }
    ++count;
  }
  ERR_clear_error();  // the loop ends on "no start line"
  return count;
}

Result<std::shared_ptr<const TlsContexts::Loaded>> Build(const TlsOptions& o) {
  if (o.cert.empty() || o.key.empty()) {
    return InvalidArgument(
        "TLS needs both a certificate and its key (--tls-cert and --tls-key, or tls.cert and "
        "tls.key in the config)");
  }
  RC_ASSIGN_OR_RETURN(std::string cert_pem, ReadFile(o.cert, "TLS certificate"));
  RC_ASSIGN_OR_RETURN(std::string key_pem, ReadFile(o.key, "TLS key"));
  std::string ca_pem;
  if (!o.client_ca.empty()) {
    RC_ASSIGN_OR_RETURN(ca_pem, ReadFile(o.client_ca, "TLS client CA"));
  }

  auto loaded = std::make_shared<TlsContexts::Loaded>();
  loaded->context = std::make_shared<ssl::context>(ssl::context::tls_server);
  ssl::context& ctx = *loaded->context;
  SSL_CTX* h = ctx.native_handle();
  SSL_CTX_set_min_proto_version(h, TLS1_2_VERSION);
  SSL_CTX_set_options(h, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
  // Keep-alive connections mostly sit idle: give OpenSSL's buffers back meanwhile.
  SSL_CTX_set_mode(h, SSL_MODE_RELEASE_BUFFERS);
  if (SSL_CTX_set_cipher_list(h, kTls12Ciphers) != 1) {
    ERR_clear_error();
    return Internal("OpenSSL has none of the TLS 1.2 ciphers " + std::string(kTls12Ciphers));
  }
  SSL_CTX_set_alpn_select_cb(h, SelectAlpn, nullptr);
  // An encrypted key must fail to load, not prompt on a terminal for a passphrase.
  ctx.set_password_callback([](size_t, ssl::context::password_purpose) { return std::string(); });

  boost::system::error_code ec;
  ctx.use_certificate_chain(boost::asio::buffer(cert_pem), ec);
  if (ec) {
    return InvalidArgument("TLS certificate " + o.cert +
                           ": no PEM certificate could be read from it (" + OpenSslError(ec) + ")");
  }
  if (key_pem.find("ENCRYPTED") != std::string::npos) {
    return InvalidArgument("TLS key " + o.key +
                           " is encrypted; give it unencrypted (openssl pkey -in KEY -out NEW)");
  }
  auto mismatch = [&o] {
    ERR_clear_error();
    return InvalidArgument("TLS key " + o.key + " does not match the certificate in " + o.cert);
  };
  ctx.use_private_key(boost::asio::buffer(key_pem), ssl::context::pem, ec);
  const auto code = static_cast<unsigned long>(ec.value());
  if (ec && ERR_GET_LIB(code) == ERR_LIB_X509 &&
      ERR_GET_REASON(code) == X509_R_KEY_VALUES_MISMATCH) {
    return mismatch();
  }
  if (ec) {
    return InvalidArgument("TLS key " + o.key + ": no PEM private key could be read from it (" +
                           OpenSslError(ec) + ")");
  }
  if (SSL_CTX_check_private_key(h) != 1) return mismatch();
  if (!o.client_ca.empty()) {
    int cas = AddClientCas(h, ca_pem);
    if (cas <= 0) {
      return InvalidArgument("TLS client CA " + o.client_ca +
                             ": no PEM CA certificate could be read from it");
    }
    SSL_CTX_set_verify(h, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
    // Sessions resumed with a client certificate need an id context (else resumption fails).
    static const unsigned char kSessionContext[] = "regcache";
    SSL_CTX_set_session_id_context(h, kSessionContext, sizeof kSessionContext - 1);
    loaded->client_certificates = true;
  }
  DescribeCertificate(SSL_CTX_get0_certificate(h), loaded.get());
  if (loaded->client_certificates) {
    loaded->extra = "; client certificates required (CA " + o.client_ca + ")";
  }
  return std::shared_ptr<const TlsContexts::Loaded>(std::move(loaded));
}

TlsContexts::FileStamp StampOf(const std::string& path) {
  TlsContexts::FileStamp s;
  if (path.empty()) return s;
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    s.error = errno;
    return s;
  }
  s.dev = st.st_dev;
  s.ino = st.st_ino;
  s.size = st.st_size;
  s.mtime_ns = static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
  return s;
}

// stat() follows symbolic links: a link swapped to a new file (Kubernetes secret volumes,
// certbot's live/ directory) shows as a new inode.
TlsContexts::Stamps StampsOf(const TlsOptions& o) {
  return {StampOf(o.cert), StampOf(o.key), StampOf(o.client_ca)};
}

}  // namespace

std::optional<size_t> TlsRecordBytes(std::string_view first_bytes) {
  constexpr size_t kHeader = 5, kMaxPlaintext = 1 << 14;
  if (first_bytes.size() < kHeader) return 0;
  const size_t length = static_cast<size_t>(static_cast<unsigned char>(first_bytes[3])) << 8 |
                        static_cast<unsigned char>(first_bytes[4]);
  if (length == 0 || length > kMaxPlaintext) return std::nullopt;
  return kHeader + length;
}

CertificateState CertificateStateAt(int64_t not_after, int64_t now) {
  if (not_after <= now) return CertificateState::kExpired;
  const int64_t warning = std::chrono::seconds(kCertificateWarning).count();
  return not_after - now <= warning ? CertificateState::kExpiresSoon : CertificateState::kValid;
}

std::optional<std::string_view> ChooseAlpn(std::string_view offered) {
  while (!offered.empty()) {
    const size_t length = static_cast<unsigned char>(offered[0]);
    if (length == 0 || length + 1 > offered.size()) break;  // malformed: nothing more to read
    std::string_view name = offered.substr(1, length);
    if (name == "http/1.1") return name;
    offered.remove_prefix(length + 1);
  }
  return std::nullopt;
}

Result<std::unique_ptr<TlsContexts>> TlsContexts::Create(TlsOptions options) {
  std::unique_ptr<TlsContexts> contexts(new TlsContexts());
  RC_RETURN_IF_ERROR(contexts->Reload(std::move(options)));
  return contexts;
}

TlsContexts::~TlsContexts() = default;

std::shared_ptr<boost::asio::ssl::context> TlsContexts::Current() const {
  std::lock_guard<std::mutex> lock(mu_);
  return loaded_->context;
}

std::string TlsContexts::Describe() const {
  std::shared_ptr<const Loaded> loaded;
  {
    std::lock_guard<std::mutex> lock(mu_);
    loaded = loaded_;
  }
  const bool expired =
      CertificateStateAt(loaded->not_after, std::time(nullptr)) == CertificateState::kExpired;
  return loaded->subject + (expired ? ", EXPIRED on " : ", expires ") + loaded->expiry +
         loaded->extra;
}

int64_t TlsContexts::NotAfter() const {
  std::lock_guard<std::mutex> lock(mu_);
  return loaded_->not_after;
}

bool TlsContexts::client_certificates() const {
  std::lock_guard<std::mutex> lock(mu_);
  return loaded_->client_certificates;
}

std::chrono::seconds TlsContexts::watch_interval() const {
  std::lock_guard<std::mutex> lock(mu_);
  return options_.watch_interval;
}

std::chrono::seconds TlsContexts::handshake_timeout() const {
  std::lock_guard<std::mutex> lock(mu_);
  return options_.handshake_timeout;
}

size_t TlsContexts::max_handshakes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return options_.max_handshakes;
}

Status TlsContexts::Reload(std::optional<TlsOptions> options) {
  std::lock_guard<std::mutex> load(load_mu_);
  if (!options) {
    std::lock_guard<std::mutex> lock(mu_);
    options = options_;
  }
  return LoadLocked(*options);
}

std::optional<Status> TlsContexts::ReloadIfChanged() {
  std::lock_guard<std::mutex> load(load_mu_);
  TlsOptions options;
  {
    std::lock_guard<std::mutex> lock(mu_);
    options = options_;
  }
  const Stamps now = StampsOf(options);
  {
    std::lock_guard<std::mutex> lock(mu_);
    const bool settled = now == seen_stamps_;
    seen_stamps_ = now;
    if (!settled || now == loaded_stamps_ || now == failed_stamps_) return std::nullopt;
  }
  return LoadLocked(options);
}

// Holds load_mu_. The stamps are taken before the files are read: a change in between is seen
// as a change again at the next poll, never missed.
Status TlsContexts::LoadLocked(const TlsOptions& options) {
  const Stamps stamps = StampsOf(options);
  auto built = Build(options);
  std::lock_guard<std::mutex> lock(mu_);
  if (!built.ok()) {
    failed_stamps_ = stamps;
    return built.status();
  }
  options_ = options;
  loaded_ = std::move(*built);
  loaded_stamps_ = seen_stamps_ = stamps;
  failed_stamps_ = {};
  return Status::Ok();
}

}  // namespace regcache::http

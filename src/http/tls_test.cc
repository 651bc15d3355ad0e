#include "http/tls.h"

#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio/io_context.hpp>
#include <boost/asio/local/connect_pair.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/ssl.hpp>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <thread>

namespace regcache::http {
namespace {

namespace asio = boost::asio;

struct KeyPair {
  std::string cert, key;
};

std::string ToPem(const std::function<int(BIO*)>& write) {
  BIO* bio = BIO_new(BIO_s_mem());
  EXPECT_EQ(write(bio), 1);
  char* data = nullptr;
  long n = BIO_get_mem_data(bio, &data);
  std::string pem(data, static_cast<size_t>(n));
  BIO_free(bio);
  return pem;
}

// A self-signed P-256 certificate named `cn`, valid for an hour (or until `expires_in` seconds
// from now); `passphrase` encrypts the key.
KeyPair MakeCertificate(const char* cn, long serial, const char* passphrase = nullptr,
                        long expires_in = 3600) {
  EVP_PKEY* key = EVP_EC_gen("P-256");
  X509* x = X509_new();
  X509_set_version(x, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(x), serial);
  X509_gmtime_adj(X509_getm_notBefore(x), std::min(-60L, expires_in - 60));
  X509_gmtime_adj(X509_getm_notAfter(x), expires_in);
  X509_set_pubkey(x, key);
  X509_NAME* name = X509_get_subject_name(x);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>(cn),
                             -1, -1, 0);
  X509_set_issuer_name(x, name);
  X509_sign(x, key, EVP_sha256());
  KeyPair kp;
  kp.cert = ToPem([x](BIO* b) { return PEM_write_bio_X509(b, x); });
  kp.key = ToPem([key, passphrase](BIO* b) {
    return PEM_write_bio_PrivateKey(b, key, passphrase ? EVP_aes_128_cbc() : nullptr,
                                    reinterpret_cast<const unsigned char*>(passphrase),
                                    passphrase ? static_cast<int>(strlen(passphrase)) : 0, nullptr,
                                    nullptr);
  });
  X509_free(x);
  EVP_PKEY_free(key);
  return kp;
}

class TlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("regcache-tls-test-" + std::to_string(getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::create_directories(dir_);
    options_.cert = Path("server.crt");
    options_.key = Path("server.key");
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string Path(const std::string& name) const { return (dir_ / name).string(); }

  // Replaces a file the way renewals do: a new file renamed over the old one (a new inode).
  void Write(const std::string& path, const std::string& text) {
    std::ofstream(path + ".new") << text;
    std::filesystem::rename(path + ".new", path);
  }
  void Install(const KeyPair& kp) {
    Write(options_.cert, kp.cert);
    Write(options_.key, kp.key);
  }
  std::string LoadError() {
    auto t = TlsContexts::Create(options_);
    return t.ok() ? "loaded" : t.status().message();
  }

  std::filesystem::path dir_;
  TlsOptions options_;
};

TEST(AlpnTest, ChoosesHttp11WhenOffered) {
  using namespace std::string_view_literals;
  EXPECT_EQ(ChooseAlpn("\x02h2\x08http/1.1"sv), "http/1.1");
  EXPECT_EQ(ChooseAlpn("\x08http/1.1"sv), "http/1.1");
  EXPECT_EQ(ChooseAlpn("\x02h2"sv), std::nullopt);
  EXPECT_EQ(ChooseAlpn(""sv), std::nullopt);
  EXPECT_EQ(ChooseAlpn("\x09http/1.1"sv), std::nullopt);  // length past the end
  EXPECT_EQ(ChooseAlpn("\x00\x08http/1.1"sv), std::nullopt);
}

TEST(AlpnTest, AlertIsAFatalHandshakeFailureRecord) {
  EXPECT_EQ(kTlsHandshakeFailureAlert[0], 21);  // alert record
  EXPECT_EQ(kTlsHandshakeFailureAlert[3] * 256 + kTlsHandshakeFailureAlert[4], 2);
  EXPECT_EQ(kTlsHandshakeFailureAlert[5], 2);   // fatal
  EXPECT_EQ(kTlsHandshakeFailureAlert[6], 40);  // handshake_failure
}

TEST(TlsRecordTest, TheFirstRecordsLengthIsReadFromItsHeader) {
  EXPECT_EQ(TlsRecordBytes(""), 0u);
  EXPECT_EQ(TlsRecordBytes(std::string("\x16\x03\x01\x02", 4)), 0u);  // header not complete
  EXPECT_EQ(TlsRecordBytes(std::string("\x16\x03\x01\x02\x00", 5)), 5u + 512);
  EXPECT_EQ(TlsRecordBytes(std::string("\x16\x03\x01\x40\x00rest", 9)), 5u + 16384);
  EXPECT_EQ(TlsRecordBytes(std::string("\x16\x03\x01\x40\x01", 5)), std::nullopt);  // > 2^14
  EXPECT_EQ(TlsRecordBytes(std::string("\x16\x03\x01\x00\x00", 5)), std::nullopt);  // empty
}

TEST(TlsRecordTest, CertificateStateWarnsAWeekAhead) {
  const int64_t now = 1700000000, day = 86400;
  EXPECT_EQ(CertificateStateAt(now + 30 * day, now), CertificateState::kValid);
  EXPECT_EQ(CertificateStateAt(now + 7 * day + 1, now), CertificateState::kValid);
  EXPECT_EQ(CertificateStateAt(now + 7 * day, now), CertificateState::kExpiresSoon);
  EXPECT_EQ(CertificateStateAt(now + 1, now), CertificateState::kExpiresSoon);
  EXPECT_EQ(CertificateStateAt(now, now), CertificateState::kExpired);
  EXPECT_EQ(CertificateStateAt(now - day, now), CertificateState::kExpired);
}

TEST_F(TlsTest, AnExpiredCertificateLoadsAndSaysSo) {
  // Loaded, not refused: see docs/serve.md ("TLS"); the server warns and /readyz says so.
  Install(MakeCertificate("old.test", 7, nullptr, -3600));
  auto t = TlsContexts::Create(options_);
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  EXPECT_NE((*t)->Describe().find(", EXPIRED on "), std::string::npos) << (*t)->Describe();
  EXPECT_EQ(CertificateStateAt((*t)->NotAfter(), time(nullptr)), CertificateState::kExpired);
}

TEST_F(TlsTest, LoadsAndDescribesTheCertificate) {
  Install(MakeCertificate("one.test", 0x1234));
  auto t = TlsContexts::Create(options_);
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  EXPECT_NE((*t)->Current(), nullptr);
  EXPECT_NE((*t)->Describe().find("CN=one.test"), std::string::npos) << (*t)->Describe();
  EXPECT_NE((*t)->Describe().find("serial 1234"), std::string::npos) << (*t)->Describe();
  EXPECT_NE((*t)->Describe().find(", expires "), std::string::npos) << (*t)->Describe();
  EXPECT_NEAR((*t)->NotAfter(), time(nullptr) + 3600, 60);
  EXPECT_FALSE((*t)->client_certificates());
}

TEST_F(TlsTest, ErrorsNameTheFileAndTheProblem) {
  EXPECT_NE(LoadError().find("server.crt: cannot read it"), std::string::npos) << LoadError();
  KeyPair one = MakeCertificate("one.test", 1), two = MakeCertificate("two.test", 2);
  Install(one);
  TlsOptions only_cert = options_;
  only_cert.key.clear();
  auto t = TlsContexts::Create(only_cert);
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("both a certificate and its key"), std::string::npos);

  Write(options_.key, two.key);
  EXPECT_NE(LoadError().find("server.key does not match the certificate in"), std::string::npos)
      << LoadError();
  Write(options_.key, MakeCertificate("one.test", 1, "secret").key);
  EXPECT_NE(LoadError().find("is encrypted"), std::string::npos) << LoadError();
  Write(options_.key, "not a key\n");
  EXPECT_NE(LoadError().find("no PEM private key"), std::string::npos) << LoadError();
  Write(options_.cert, "not a certificate\n");
  EXPECT_NE(LoadError().find("server.crt: no PEM certificate"), std::string::npos) << LoadError();

  Install(one);
  options_.client_ca = Path("ca.crt");
  Write(options_.client_ca, "no CA here\n");
  EXPECT_NE(LoadError().find("ca.crt: no PEM CA certificate"), std::string::npos) << LoadError();
  Write(options_.client_ca, two.cert);
  auto mtls = TlsContexts::Create(options_);
  ASSERT_TRUE(mtls.ok()) << mtls.status().ToString();
  EXPECT_TRUE((*mtls)->client_certificates());
}

TEST_F(TlsTest, AFailedReloadKeepsTheCurrentContext) {
  Install(MakeCertificate("one.test", 1));
  auto t = TlsContexts::Create(options_);
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  auto before = (*t)->Current();
  Write(options_.key, MakeCertificate("other.test", 3).key);
  Status s = (*t)->Reload();
  EXPECT_FALSE(s.ok());
  EXPECT_EQ((*t)->Current(), before);
  EXPECT_NE((*t)->Describe().find("CN=one.test"), std::string::npos);

  Install(MakeCertificate("two.test", 2));
  ASSERT_TRUE((*t)->Reload().ok());
  EXPECT_NE((*t)->Current(), before);
  EXPECT_NE((*t)->Describe().find("CN=two.test"), std::string::npos);
  // Connections that began before keep theirs.
  EXPECT_NE(before->native_handle(), nullptr);
}

TEST_F(TlsTest, PollingLoadsChangedFilesOnceTheySettle) {
  Install(MakeCertificate("one.test", 1));
  auto created = TlsContexts::Create(options_);
  ASSERT_TRUE(created.ok()) << created.status().ToString();
  TlsContexts& t = **created;
  EXPECT_EQ(t.ReloadIfChanged(), std::nullopt);

  // A renewal caught half-way (new certificate, old key) is not tried: the files still move.
  KeyPair two = MakeCertificate("two.test", 2);
  Write(options_.cert, two.cert);
  EXPECT_EQ(t.ReloadIfChanged(), std::nullopt);
  Write(options_.key, two.key);
  EXPECT_EQ(t.ReloadIfChanged(), std::nullopt);
  auto loaded = t.ReloadIfChanged();
  ASSERT_TRUE(loaded.has_value());
  EXPECT_TRUE(loaded->ok()) << loaded->ToString();
  EXPECT_NE(t.Describe().find("CN=two.test"), std::string::npos);
  EXPECT_EQ(t.ReloadIfChanged(), std::nullopt);

  // Files that do not load are reported once, and the current certificate stays.
  Write(options_.key, "broken\n");
  EXPECT_EQ(t.ReloadIfChanged(), std::nullopt);
  auto failed = t.ReloadIfChanged();
  ASSERT_TRUE(failed.has_value());
  EXPECT_FALSE(failed->ok());
  EXPECT_EQ(t.ReloadIfChanged(), std::nullopt);
  EXPECT_NE(t.Describe().find("CN=two.test"), std::string::npos);
}

// A handshake against the server context: TLS 1.2 or newer, ALPN http/1.1 when h2 is also
// offered, and a client that only speaks TLS 1.1 refused.
TEST_F(TlsTest, HandshakeNegotiatesHttp11AndRefusesOldVersions) {
  KeyPair kp = MakeCertificate("localhost", 7);
  Install(kp);
  auto server_contexts = TlsContexts::Create(options_);
  ASSERT_TRUE(server_contexts.ok()) << server_contexts.status().ToString();

  auto handshake = [&](asio::ssl::context& client_ctx, std::string* alpn, int* version) {
    asio::io_context ioc;
    asio::local::stream_protocol::socket a(ioc), b(ioc);
    asio::local::connect_pair(a, b);
    asio::ssl::stream<asio::local::stream_protocol::socket&> server(a,
                                                                    *(*server_contexts)->Current());
    asio::ssl::stream<asio::local::stream_protocol::socket&> client(b, client_ctx);
    boost::system::error_code server_ec, client_ec;
    std::thread t([&] {
      server.handshake(asio::ssl::stream_base::server, server_ec);
      if (server_ec) a.close();
    });
    client.handshake(asio::ssl::stream_base::client, client_ec);
    if (client_ec) b.close();
    t.join();
    if (!client_ec && !server_ec) {
      const unsigned char* p = nullptr;
      unsigned len = 0;
      SSL_get0_alpn_selected(client.native_handle(), &p, &len);
      *alpn = std::string(reinterpret_cast<const char*>(p), len);
      *version = SSL_version(client.native_handle());
    }
    return !client_ec && !server_ec;
  };

  asio::ssl::context modern(asio::ssl::context::tls_client);
  modern.add_certificate_authority(asio::buffer(kp.cert));
  modern.set_verify_mode(asio::ssl::verify_peer);
  static const unsigned char kOffer[] = "\x02h2\x08http/1.1";
  SSL_CTX_set_alpn_protos(modern.native_handle(), kOffer, sizeof kOffer - 1);
  std::string alpn;
  int version = 0;
  ASSERT_TRUE(handshake(modern, &alpn, &version));
  EXPECT_EQ(alpn, "http/1.1");
  EXPECT_GE(version, TLS1_2_VERSION);

  asio::ssl::context old(asio::ssl::context::tls_client);
  SSL_CTX_set_security_level(old.native_handle(), 0);
  SSL_CTX_set_min_proto_version(old.native_handle(), TLS1_VERSION);
  SSL_CTX_set_max_proto_version(old.native_handle(), TLS1_1_VERSION);
  EXPECT_FALSE(handshake(old, &alpn, &version));

  asio::ssl::context h2_only(asio::ssl::context::tls_client);
  static const unsigned char kH2[] = "\x02h2";
  SSL_CTX_set_alpn_protos(h2_only.native_handle(), kH2, sizeof kH2 - 1);
  EXPECT_FALSE(handshake(h2_only, &alpn, &version));
}

}  // namespace
}  // namespace regcache::http

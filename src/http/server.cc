#include "http/server.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <boost/asio.hpp>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "base/cpus.h"
#include "base/once_per_interval.h"
#include "base/strings.h"
#include "base/work_queue.h"
#include "http/auth.h"
#include "http/errors.h"
#include "http/handshake_slots.h"
#include "http/range.h"
#include "http/route.h"
#include "http/status_page.h"
#include "oci/manifest.h"

namespace regcache::http {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = beast::http;
using tcp = asio::ip::tcp;
using asio::awaitable;
using asio::use_awaitable;
using namespace asio::experimental::awaitable_operators;
constexpr auto kTuple = asio::as_tuple(use_awaitable);
// A TLS connection, layered on the session's own tcp_stream.
using TlsStream = beast::ssl_stream<beast::tcp_stream&>;
// bcrypt checks that may wait for one of the two auth threads, in each lane.
constexpr size_t kAuthQueue = 64;
// What the first read of a connection asks for: a TLS record header, enough to tell the protocol.
constexpr size_t kTlsRecordHeader = 5;
// A client in the wrong protocol, or failing handshakes, is logged once per address this often.
constexpr int kProtocolNoteMinutes = 10;

using Headers = std::vector<std::pair<std::string, std::string>>;
using Request = bhttp::request<bhttp::empty_body>;

struct Reply {
  unsigned status = 200;
  Headers headers;
  std::string body;
  // A shared body (manifests): sent without copying; wins over `body` when set.
  std::shared_ptr<const cache::CachedManifest> shared;
  std::optional<uint64_t> head_length;  // Content-Length to announce on HEAD
  bool close = false;
};

// What the access log records about one request.
struct Outcome {
  unsigned status = 0;
  uint64_t bytes = 0;
  std::string cache;  // hit, miss, stale, …
  std::string upstream;
  cache::UpstreamStats* stats = nullptr;  // the upstream's counters, once it is chosen
  bool sent = false;                      // a status line went out
};

bool AcceptsMediaType(const Request& req, std::string_view media_type) {
  bool any_accept = false;
  for (auto it = req.find(bhttp::field::accept);
       it != req.end() && it->name() == bhttp::field::accept; ++it) {
    any_accept = true;
    std::string_view rest(it->value().data(), it->value().size());
    while (!rest.empty()) {
      size_t comma = rest.find(',');
      std::string_view part = rest.substr(0, comma);
      rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
      std::string_view t = Trim(part.substr(0, part.find(';')));
      if (t == "*/*" || t == media_type) return true;
      if (t == "application/*" && media_type.starts_with("application/")) return true;
    }
  }
  return !any_accept;
}

// Renders a response's status line and header fields into one block, the way every response
// leaves this server (one gathered write with the body).
class HeaderBlockBuilder {
 public:
  explicit HeaderBlockBuilder(unsigned status) {
    out_.reserve(384);
    out_.append("HTTP/1.1 ").append(std::to_string(status)).push_back(' ');
    auto reason = bhttp::obsolete_reason(static_cast<bhttp::status>(status));
    out_.append(reason.data(), reason.size()).append("\r\n");
    out_.append("Docker-Distribution-API-Version: registry/2.0\r\n");
  }
  // Values may carry what an upstream sent: no CR or LF can end the block early.
  HeaderBlockBuilder& Add(std::string_view name, std::string_view value, bool quoted = false) {
    out_.append(name).append(": ");
    if (quoted) out_.push_back('"');
    if (value.find('\r') == std::string_view::npos && value.find('\n') == std::string_view::npos) {
      out_.append(value);
    } else {
      for (char c : value) {
        if (c != '\r' && c != '\n') out_.push_back(c);
      }
    }
    if (quoted) out_.push_back('"');
    out_.append("\r\n");
    return *this;
  }
  std::string Finish(uint64_t content_length, bool keep_alive) && {
    out_.append("Content-Length: ").append(std::to_string(content_length)).append("\r\n");
    if (!keep_alive) out_.append("Connection: close\r\n");
    out_.append("\r\n");
    return std::move(out_);
  }

 private:
  std::string out_;
};

// The fields that describe a stored manifest, in the order both the in-memory fast path and
// ServeManifest send them. `add(name, value, quoted)`.
template <typename Add>
void ManifestFields(const cache::CachedManifest& m, Add&& add) {
  add("Content-Type", m.media_type, false);
  add("Docker-Content-Digest", m.digest.str(), false);
  add("ETag", m.digest.str(), true);
}

template <typename Add>
void BlobFields(const oci::Digest& digest, Add&& add) {
  add("Content-Type", "application/octet-stream", false);
  add("Docker-Content-Digest", digest.str(), false);
  add("ETag", digest.str(), true);
  add("Accept-Ranges", "bytes", false);
}

// Adapts Headers to the field callbacks above.
auto AppendTo(Headers& headers) {
  return [&headers](std::string_view name, std::string_view value, bool quoted) {
    headers.emplace_back(std::string(name),
                         quoted ? "\"" + std::string(value) + "\"" : std::string(value));
  };
}

// A response rendered in full before it is written: the header block, and the manifest it
// sends as body (none for HEAD or a blob).
struct Prepared {
  std::string block;
  std::shared_ptr<const cache::CachedManifest> body;
  bool keep_alive = false;
};

// Built outside coroutines: GCC 12 miscompiles aggregate initialization from string literals
// inside co_await expressions ("array used as initializer").
Reply MakeReply(unsigned status, const std::string& content_type, std::string body) {
  Reply r;
  r.status = status;
  r.headers.push_back({"Content-Type", content_type});
  r.body = std::move(body);
  return r;
}

Reply ErrorReply(unsigned status, const char* code, const std::string& message) {
  Reply r = MakeReply(status, "application/json", ErrorBody(code, message));
  return r;
}

// The message a client sees for a failure that involved an upstream: names the upstream by its
// configured name and says what happened, never its URL, address or credentials (those go to
// the log).
std::string PublicMessage(const Status& s, Endpoint ep, const std::string& upstream) {
  const std::string who =
      s.origin() == Origin::kBacking ? "the backing registry" : "upstream " + upstream;
  switch (s.code()) {
    case Code::kNotFound:
      return std::string(ep == Endpoint::kBlob       ? "blob"
                         : ep == Endpoint::kManifest ? "manifest"
                                                     : "repository") +
             " unknown to " + who;
    case Code::kRateLimited:
      return who + " is rate-limiting this cache";
    case Code::kUnavailable:
      return who + " is unavailable or overloaded";
    case Code::kUnauthenticated:
      return who + " refused this cache's credentials";
    case Code::kDenied:
      return who + " denied access";
    case Code::kIntegrity:
      return who + (ep == Endpoint::kManifest
                        ? " sent a manifest that does not match its digest or is not valid"
                        : " sent content that does not match its digest or size");
    case Code::kUnsupported:
      return who + " holds content this cache does not serve (e.g. a schema1 manifest)";
    case Code::kIoError:
      return "local storage error";
    case Code::kAborted:
      return "server is shutting down";
    default:
      return "internal error";
  }
}

// Shared between a session and shutdown. Both touch it only on the session's own event-loop
// thread, so `closed` (set before the stream is destroyed) tells a late shutdown closure to leave
// it alone.
struct SessionState {
  asio::any_io_executor executor;
  beast::tcp_stream* stream = nullptr;
  std::atomic<bool> busy{false};
  // When the connection last finished a request (or opened): the oldest idle one is closed
  // first when the connection cap is reached.
  std::atomic<int64_t> idle_since{0};
  std::atomic<bool> evicted{false};
  bool closed = false;
};

int64_t SteadyNanos() { return std::chrono::steady_clock::now().time_since_epoch().count(); }

// Wakes a coroutine parked on `timer` from another thread. Holds the timer weakly: if the
// coroutine is gone, there is nothing to wake.
std::function<void()> Waker(const std::shared_ptr<asio::steady_timer>& timer) {
  std::weak_ptr<asio::steady_timer> weak = timer;
  auto ex = timer->get_executor();
  return [weak, ex] {
    asio::post(ex, [weak] {
      if (auto t = weak.lock()) t->cancel();
    });
  };
}

class ServerImpl : public Server {
 public:
  ServerImpl(ServerOptions options, cache::PullThroughCache& cache, cache::UpstreamSet& upstreams,
             cache::Metrics& metrics, std::shared_ptr<Authenticator> auth)
      : options_(std::move(options)),
        cache_(cache),
        upstreams_(upstreams),
        metrics_(metrics),
        local_("local", static_cast<size_t>(std::max(1, options_.worker_threads)), 4096),
        auth_(std::move(auth)),
        // Guesses cannot delay credentials that verified before: those have a lane of their own.
        auth_workers_(auth_ ? std::make_unique<WorkQueue>("auth", 2, kAuthQueue, kAuthQueue)
                            : nullptr),
        status_(metrics, upstreams, cache),
        ioc_(std::make_unique<asio::io_context>(1)),
        acceptor_(std::make_unique<tcp::acceptor>(*ioc_)),
        signals_(std::make_unique<asio::signal_set>(*ioc_, SIGINT, SIGTERM, SIGHUP)) {
    for (int i = 1; i < options_.io_threads; ++i) {
      workers_.push_back(std::make_unique<asio::io_context>(1));
      worker_guards_.push_back(asio::make_work_guard(*workers_.back()));
    }
  }

  ~ServerImpl() override {
    // Whatever could still call back into a coroutine must be gone first, then the coroutines
    // (destroying the io_context destroys their frames, whose guards use the members below).
    upstreams_.Shutdown();
    local_.Shutdown();
    if (auth_workers_) auth_workers_->Shutdown();
    acceptor_.reset();
    signals_.reset();
    worker_guards_.clear();
    workers_.clear();
    ioc_.reset();
  }

  Status Bind() {
    if (options_.tls.enabled()) {
      RC_ASSIGN_OR_RETURN(tls_, TlsContexts::Create(options_.tls));
      metrics_.SetGauge("regcache_tls_certificate_expiry_timestamp_seconds", "", tls_->NotAfter());
      // An expired certificate does not stop the start: clients that verify refuse it, but
      // /healthz, /metrics and clients that skip verification keep working, /readyz says why,
      // and a renewal is picked up without a restart.
      LogCertificate("TLS certificate: ");
    }
    beast::error_code ec;
    auto address = asio::ip::make_address(options_.host == "" ? "0.0.0.0" : options_.host, ec);
    if (ec) return InvalidArgument("invalid listen address '" + options_.host + "'");
    tcp::endpoint ep(address, options_.port);
    acceptor_->open(ep.protocol(), ec);
    if (!ec) acceptor_->set_option(asio::socket_base::reuse_address(true), ec);
    if (!ec) acceptor_->bind(ep, ec);
    if (!ec) acceptor_->listen(1024, ec);
    if (ec) {
      return IoError("cannot listen on " + options_.host + ":" + std::to_string(options_.port) +
                     ": " + ec.message());
    }
    port_ = acceptor_->local_endpoint().port();
    if (options_.max_connections == 0) {
      struct rlimit rl;
      const uint64_t descriptors = getrlimit(RLIMIT_NOFILE, &rl) == 0 ? rl.rlim_cur : 1024;
      const uint64_t memory = AvailableMemoryBytes();
      options_.max_connections = DefaultMaxConnections(descriptors, memory, tls_ != nullptr);
      spdlog::info(
          "connection cap {} (max_connections: 0, from {} file descriptors and {} MiB of "
          "memory)",
          options_.max_connections, descriptors, memory >> 20);
    }
    return Status::Ok();
  }

  uint16_t port() const override { return port_; }

  void Run() override {
    asio::co_spawn(*ioc_, Listen(), asio::detached);
    SweepIdle();
    SampleStatus();
    WaitForSignal();
    if (tls_) asio::co_spawn(*ioc_, WatchTlsFiles(), asio::detached);
    std::vector<std::thread> threads;
    for (auto& worker : workers_) threads.emplace_back([&worker] { worker->run(); });
    ioc_->run();
    for (auto& t : threads) t.join();
    // Bounded: transfers in progress abort within about a second, queued work then fails fast.
    upstreams_.Shutdown();
    local_.Shutdown();
    if (auth_workers_) auth_workers_->Shutdown();
  }

  // SIGTERM/SIGINT: graceful shutdown. SIGHUP: the TLS files are read again, then
  // options_.on_reload runs on a local worker (it may read files and build clients), and the
  // server goes on.
  void WaitForSignal() {
    signals_->async_wait([this](const beast::error_code& ec, int sig) {
      if (ec) return;
      if (sig == SIGHUP) {
        if (tls_) LogTlsReload("SIGHUP", tls_->Reload());
        if (!options_.on_reload) {
          if (!tls_) spdlog::info("SIGHUP: nothing to reload");
        } else if (!local_.TrySubmit(options_.on_reload)) {
          spdlog::warn(
              "SIGHUP: reload not started, the local workers are saturated; send it again");
        }
        WaitForSignal();
        return;
      }
      spdlog::info("signal {}: shutting down (grace {} s)", sig, options_.shutdown_grace.count());
      BeginShutdown();
    });
  }

  void Stop() override {
    asio::post(*ioc_, [this] { BeginShutdown(); });
  }

  Status ReloadTls(const TlsOptions& tls) override {
    if (!tls_ || !tls.enabled()) {
      return InvalidArgument("TLS is turned on or off only by a restart");
    }
    Status s = tls_->Reload(tls);
    LogTlsReload("configuration", s);
    return s;
  }

 private:
  // Certificate renewals (certbot, cert-manager) replace the files: polled, not watched with
  // inotify, which misses a symbolic link swapped in a parent directory.
  awaitable<void> WatchTlsFiles() {
    asio::steady_timer timer(*ioc_);
    while (!stopping_) {
      const auto every = tls_->watch_interval();
      timer.expires_after(every.count() > 0 ? every : std::chrono::seconds(5));
      co_await timer.async_wait(kTuple);
      if (stopping_) continue;
      if (every.count() > 0) {
        if (auto s = tls_->ReloadIfChanged()) LogTlsReload("certificate files changed", *s);
      }
      CheckCertificate();
    }
  }

  void LogTlsReload(const char* trigger, const Status& s) {
    if (!s.ok()) {
      metrics_.Count("regcache_tls_reloads_total", "result=\"rejected\"");
      spdlog::error("{}: TLS files not loaded, the current certificate keeps serving: {}", trigger,
                    s.message());
      return;
    }
    metrics_.Count("regcache_tls_reloads_total", "result=\"ok\"");
    metrics_.SetGauge("regcache_tls_certificate_expiry_timestamp_seconds", "", tls_->NotAfter());
    LogCertificate(std::string(trigger) + ": TLS certificate reloaded: ");
  }

  // The certificate served, at a level that says how soon it expires: info while valid, warn
  // within kCertificateWarning of its expiry, error once expired (and /readyz answers 503).
  void LogCertificate(const std::string& what) {
    const auto state = CertificateStateAt(tls_->NotAfter(), std::time(nullptr));
    certificate_state_ = static_cast<int>(state);
    const std::string line = what + tls_->Describe();
    if (state == CertificateState::kExpired) {
      spdlog::error(
          "{}: clients that verify certificates refuse it, and /readyz answers 503 "
          "until a renewed certificate is loaded (on a change of the files or SIGHUP)",
          line);
    } else if (state == CertificateState::kExpiresSoon) {
      spdlog::warn("{}: renew it within days", line);
    } else {
      spdlog::info("{}", line);
    }
  }

  // A certificate that comes near its expiry, or passes it, while being served: said once.
  void CheckCertificate() {
    const auto state = CertificateStateAt(tls_->NotAfter(), std::time(nullptr));
    if (static_cast<int>(state) != certificate_state_.load()) LogCertificate("TLS certificate: ");
  }

  // Why /readyz says the TLS listener does not work fully: empty when it does.
  std::string TlsUnready() const {
    if (!tls_ ||
        CertificateStateAt(tls_->NotAfter(), std::time(nullptr)) != CertificateState::kExpired) {
      return "";
    }
    return "the certificate served has expired (" + tls_->Describe() + ")";
  }

  void BeginShutdown() {
    if (stopping_.exchange(true)) return;
    beast::error_code ec;
    acceptor_->close(ec);
    signals_->cancel();
    {
      std::lock_guard<std::mutex> lock(sessions_mu_);
      for (const auto& s : sessions_) {
        asio::post(s->executor, [s] {
          if (!s->closed && !s->busy) {
            beast::error_code ignored;
            s->stream->socket().close(ignored);
          }
        });
      }
    }
    deadline_ = std::chrono::steady_clock::now() + options_.shutdown_grace;
    WaitForDrain();
  }

  void WaitForDrain() {
    auto timer = std::make_shared<asio::steady_timer>(*ioc_, std::chrono::milliseconds(50));
    timer->async_wait([this, timer](const beast::error_code&) {
      size_t active;
      {
        std::lock_guard<std::mutex> lock(sessions_mu_);
        active = sessions_.size();
      }
      if (active == 0 || std::chrono::steady_clock::now() >= deadline_) {
        if (active > 0) spdlog::warn("shutdown grace over: dropping {} connection(s)", active);
        worker_guards_.clear();
        for (auto& worker : workers_) worker->stop();
        ioc_->stop();
        return;
      }
      WaitForDrain();
    });
  }

  // Past the connection cap: a fixed answer written without waiting, then close. The server
  // stays responsive for the connections it has. (On a TLS port nothing can be said before a
  // handshake: just the close.)
  template <typename Socket>
  static void Refuse(Socket& socket, bool tls) {
    static const std::string kReply = [] {
      std::string body =
          ErrorBody("UNAVAILABLE", "too many connections to this cache; retry shortly");
      return "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
             "Retry-After: 1\r\nConnection: close\r\nContent-Length: " +
             std::to_string(body.size()) + "\r\n\r\n" + body;
    }();
    if (!tls) {
      ::send(socket.native_handle(), kReply.data(), kReply.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
    }
    beast::error_code ignored;
    socket.shutdown(tcp::socket::shutdown_both, ignored);
    socket.close(ignored);
  }

  // Samples the counters for the status page's charts, now and every kSampleEvery until
  // shutdown.
  void SampleStatus() {
    status_.Sample();
    auto timer = std::make_shared<asio::steady_timer>(*ioc_, StatusPage::kSampleEvery);
    timer->async_wait([this, timer](const beast::error_code& ec) {
      if (!ec && !stopping_) SampleStatus();
    });
  }

  awaitable<void> Listen() {
    while (!stopping_) {
      // Connections are dealt to the I/O threads in turn; each thread runs its own io_context,
      // so a connection's handlers never run concurrently and need no strand (Envoy's model:
      // one event loop per worker, nothing shared on the request path).
      asio::io_context& loop = next_loop_ == 0 ? *ioc_ : *workers_[next_loop_ - 1];
      next_loop_ = (next_loop_ + 1) % (workers_.size() + 1);
      auto [ec, socket] =
          co_await acceptor_->async_accept(asio::any_io_executor(loop.get_executor()), kTuple);
      if (stopping_) co_return;  // accepted as shutdown began: the close sweep has passed
      if (ec) {
        if (ec == asio::error::no_descriptors) {
          spdlog::error("accept: out of file descriptors");
          asio::steady_timer t(*ioc_, std::chrono::milliseconds(100));
          co_await t.async_wait(kTuple);
        }
        continue;
      }
      if (static_cast<size_t>(metrics_.connections.load()) >= options_.max_connections &&
          !EvictIdleConnection()) {
        if (!refusing_.exchange(true)) {
          spdlog::warn(
              "connection cap ({}) reached with every connection busy: refusing new "
              "connections with 503",
              options_.max_connections);
        }
        metrics_.Count("regcache_connections_refused_total", "");
        Refuse(socket, tls_ != nullptr);
        continue;
      }
      refusing_ = false;
      // Small responses must not wait for Nagle and a delayed ACK (40 ms on every keep-alive
      // request); bodies are written in large pieces anyway.
      beast::error_code ignored;
      socket.set_option(tcp::no_delay(true), ignored);
      auto ex = socket.get_executor();
      // Counted here, not when the session starts on its thread: the cap check above must see
      // every connection already accepted.
      metrics_.connections++;
      asio::co_spawn(ex, Session(std::move(socket)), asio::detached);
    }
  }

  // At the connection cap, an idle keep-alive connection is worth less than a new client: closes
  // the one idle longest. False when every connection is busy.
  bool EvictIdleConnection() {
    std::shared_ptr<SessionState> victim;
    {
      std::lock_guard<std::mutex> lock(sessions_mu_);
      int64_t oldest = 0;
      for (const auto& s : sessions_) {
        if (s->busy || s->evicted) continue;
        int64_t since = s->idle_since.load();
        if (!victim || since < oldest) {
          victim = s;
          oldest = since;
        }
      }
      if (!victim) return false;
      victim->evicted = true;
    }
    metrics_.Count("regcache_connections_evicted_total", "");
    asio::post(victim->executor, [victim] {
      if (!victim->closed && !victim->busy) {
        beast::error_code ignored;
        victim->stream->socket().close(ignored);
      }
    });
    return true;
  }

  // Every quarter of idle_timeout (at most every 5 s): closes connections that sat without a
  // complete request for longer than idle_timeout — idle keep-alive connections and clients
  // that send a request's header too slowly alike.
  void SweepIdle() {
    const auto period = std::clamp<std::chrono::milliseconds>(
        std::chrono::duration_cast<std::chrono::milliseconds>(options_.idle_timeout) / 4,
        std::chrono::milliseconds(50), std::chrono::milliseconds(5000));
    auto timer = std::make_shared<asio::steady_timer>(*ioc_, period);
    timer->async_wait([this, timer](const beast::error_code& ec) {
      if (ec || stopping_) return;
      const int64_t cutoff =
          SteadyNanos() -
          std::chrono::duration_cast<std::chrono::nanoseconds>(options_.idle_timeout).count();
      {
        std::lock_guard<std::mutex> lock(sessions_mu_);
        for (const auto& s : sessions_) {
          if (s->busy || s->idle_since.load() > cutoff) continue;
          asio::post(s->executor, [s] {
            if (!s->closed && !s->busy) {
              beast::error_code ignored;
              s->stream->socket().close(ignored);
            }
          });
        }
      }
      SweepIdle();
    });
  }

  // Releases a session's bookkeeping however its coroutine ends: normally, by an exception, or
  // by being destroyed with the io_context.
  struct SessionGuard {
    ServerImpl* server;
    std::shared_ptr<SessionState> state;
    ~SessionGuard() {
      state->closed = true;
      std::lock_guard<std::mutex> lock(server->sessions_mu_);
      server->sessions_.erase(state);
    }
  };

  // Listen counted the connection; this uncounts it however the session ends, even if setting
  // it up throws (bad_alloc) before the SessionGuard exists.
  struct ConnectionCount {
    ServerImpl* server;
    ~ConnectionCount() { server->metrics_.connections--; }
  };

  awaitable<void> Session(tcp::socket socket) {
    ConnectionCount counted{this};
    beast::tcp_stream stream(std::move(socket));
    auto state = std::make_shared<SessionState>();
    state->executor = stream.get_executor();
    state->stream = &stream;
    state->idle_since = SteadyNanos();
    {
      std::lock_guard<std::mutex> lock(sessions_mu_);
      sessions_.insert(state);
    }
    SessionGuard guard{this, state};
    // On a TLS port the ClientHello must arrive, and the handshake end, within this.
    const auto handshake_deadline = std::chrono::steady_clock::now() +
                                    (tls_ ? std::min<std::chrono::steady_clock::duration>(
                                                tls_->handshake_timeout(), options_.idle_timeout)
                                          : std::chrono::steady_clock::duration::zero());
    if (tls_) stream.expires_at(handshake_deadline);
    beast::flat_buffer buffer;
    // The first bytes tell the protocol: TLS opens with a handshake record, HTTP with a method.
    // They stay in `buffer` for the HTTP parser or the TLS handshake. Only a record header's
    // worth is asked for, so a client that sends nothing, or little, holds next to no buffer
    // (the parser and the handshake read on). SweepIdle bounds the wait on a plain port.
    auto [ec, n] = co_await stream.async_read_some(buffer.prepare(kTlsRecordHeader), kTuple);
    if (ec) co_return;  // closed without a word (e.g. a port probe), idle, or past the deadline
    buffer.commit(n);
    const bool hello =
        *static_cast<const unsigned char*>(buffer.data().data()) == kTlsHandshakeRecord;
    if (hello != (tls_ != nullptr)) {
      co_await WrongProtocol(stream, buffer, hello);
    } else if (tls_) {
      co_await ServeTls(stream, buffer, state);
    } else {
      co_await Requests(stream, buffer, state.get());
      beast::error_code ignored;
      stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
    }
  }

  // Reads on until `buffer` holds the whole first TLS record (the ClientHello, as a rule):
  // until then no OpenSSL state exists for the connection, so a client that stalls mid-hello
  // costs only these bytes. False if the client closed, hit the deadline (set on `stream`) or
  // sent no valid record header.
  static awaitable<bool> ReadFirstTlsRecord(beast::tcp_stream& stream, beast::flat_buffer& buffer) {
    while (true) {
      const auto bytes = TlsRecordBytes(
          std::string_view(static_cast<const char*>(buffer.data().data()), buffer.size()));
      if (!bytes) co_return false;
      if (*bytes > 0 && buffer.size() >= *bytes) co_return true;
      const size_t want = *bytes > 0 ? *bytes - buffer.size() : kTlsRecordHeader - buffer.size();
      auto [ec, n] = co_await stream.async_read_some(buffer.prepare(want), kTuple);
      if (ec) co_return false;
      buffer.commit(n);
    }
  }

  // A TLS connection: the handshake (its ClientHello already in `buffer`) under a deadline, the
  // requests as on a plain connection, then close_notify.
  awaitable<void> ServeTls(beast::tcp_stream& stream, beast::flat_buffer& buffer,
                           const std::shared_ptr<SessionState>& state) {
    const std::string peer = Peer(stream);  // a timeout closes the socket
    if (!co_await ReadFirstTlsRecord(stream, buffer)) {
      metrics_.Count("regcache_tls_handshake_failures_total", "");
      if (!stopping_) NoteTlsFailure(peer, "no complete ClientHello in time");
      co_return;
    }
    // Past the ClientHello a handshake holds OpenSSL's state: at most max_handshakes at once,
    // the oldest closed to make room (see http/handshake_slots.h).
    bool evicted = false;
    auto slot = handshakes_.Enter(
        tls_->max_handshakes(),
        [state] {
          asio::post(state->executor, [state] {
            state->evicted = true;
            if (!state->closed) {
              beast::error_code ignored;
              state->stream->socket().close(ignored);
            }
          });
        },
        &evicted);
    if (evicted) {
      metrics_.Count("regcache_tls_handshakes_evicted_total", "");
      uint64_t more = 0;
      if (cap_notes_.ShouldLog("", std::chrono::steady_clock::now(), &more)) {
        spdlog::warn(
            "TLS handshakes in progress reached max_handshakes ({}): closing the oldest to make "
            "room (clients that stall mid-handshake, or a burst); {} more since the last line, "
            "counted in regcache_tls_handshakes_evicted_total",
            tls_->max_handshakes(), more);
      }
    }
    // This connection's context, whatever reloads come while it is open.
    std::shared_ptr<asio::ssl::context> context = tls_->Current();
    TlsStream tls(stream, *context);
    auto [ec, used] =
        co_await tls.async_handshake(asio::ssl::stream_base::server, buffer.data(), kTuple);
    slot.reset();
    if (ec) {
      if (state->evicted) co_return;  // counted as evicted
      metrics_.Count("regcache_tls_handshake_failures_total", "");
      if (!stopping_) NoteTlsFailure(peer, ec.message());
      co_return;
    }
    stream.expires_never();
    buffer.consume(used);
    co_await Requests(tls, buffer, state.get());
    // close_notify without waiting for the client's (it may never send one).
    SSL_set_shutdown(tls.native_handle(), SSL_RECEIVED_SHUTDOWN);
    stream.expires_after(std::chrono::seconds(1));
    co_await tls.async_shutdown(kTuple);
    beast::error_code ignored;
    stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
  }

  // A failed handshake, logged once per client address per interval (a client retrying in a
  // loop, or a flood, would fill the log); all are counted.
  void NoteTlsFailure(const std::string& peer, const std::string& why) {
    uint64_t more = 0;
    if (!protocol_notes_.ShouldLog("handshake " + AddressOf(peer), std::chrono::steady_clock::now(),
                                   &more)) {
      return;
    }
    spdlog::info("TLS handshake with {} failed: {}{}", peer, why, MoreFromThere(more));
  }

  // " (and N more from this address since its last line)", for a line that stands for several.
  static std::string MoreFromThere(uint64_t more) {
    if (more == 0) return "";
    return " (and " + std::to_string(more) + " more from this address since its last line)";
  }

  // "203.0.113.9" of "203.0.113.9:41234" (and "2001:db8::1" of "2001:db8::1:41234").
  static std::string AddressOf(const std::string& peer) {
    const size_t colon = peer.rfind(':');
    return colon == std::string::npos ? peer : peer.substr(0, colon);
  }

  // A client speaking the other protocol than the port. A TLS ClientHello on a plain port gets a
  // fatal TLS alert, which every TLS client reports at once (and podman/skopeo set `insecure`
  // fall back to plain HTTP); plain HTTP on a TLS port gets a 400 saying to use https://. Both
  // are counted, and logged once per client address per kProtocolNoteMinutes (podman does it on
  // every pull); then a close that lets the client read the answer.
  awaitable<void> WrongProtocol(beast::tcp_stream& stream, beast::flat_buffer& buffer, bool hello) {
    const std::string peer = Peer(stream);
    uint64_t more = 0;
    const bool note = protocol_notes_.ShouldLog((hello ? "tls " : "http ") + AddressOf(peer),
                                                std::chrono::steady_clock::now(), &more);
    if (hello) {
      metrics_.Count("regcache_wrong_protocol_total", "received=\"tls\"");
      if (note) {
        spdlog::warn(
            "TLS ClientHello from {} on a plain-HTTP port: answered with a TLS alert. podman, "
            "buildah and skopeo do this on every pull from a registry set `insecure = true` (they "
            "try HTTPS first, then fall back to HTTP): expected from them; other clients: use "
            "http://, or configure --tls-cert/--tls-key. Logged once per address every {} min, "
            "counted in regcache_wrong_protocol_total{{received=\"tls\"}}{}",
            peer, kProtocolNoteMinutes, MoreFromThere(more));
      }
      stream.expires_after(options_.write_timeout);
      co_await asio::async_write(stream, asio::buffer(kTlsHandshakeFailureAlert), kTuple);
    } else {
      bhttp::request_parser<bhttp::empty_body> parser;
      parser.header_limit(static_cast<std::uint32_t>(options_.max_header_bytes));
      // The request's header, for the log (within the handshake deadline).
      auto [ec, n] = co_await bhttp::async_read_header(stream, buffer, parser, kTuple);
      const Request& req = parser.get();
      const std::string host = ec ? "" : std::string(req[bhttp::field::host]);
      metrics_.Count("regcache_wrong_protocol_total", "received=\"http\"");
      if (note) {
        spdlog::warn(
            "plain HTTP request from {} on the HTTPS port{}: answered 400; use https://{}", peer,
            ec ? std::string()
               : " (" + std::string(req.method_string()) + " " + std::string(req.target()) + ")",
            MoreFromThere(more));
      }
      Reply r = ErrorReply(400, "UNSUPPORTED",
                           "this port speaks HTTPS only: use https://" +
                               (host.empty() ? std::string("HOST:PORT") : host) + "/");
      co_await Write(stream, r, false, false);
    }
    co_await LingeringClose(stream);
  }

  // Closes a connection whose client may still be sending (the rest of a ClientHello, a request
  // body): sends FIN, then discards what arrives until the client closes, for a second at most,
  // so that unread bytes do not make the kernel reset the connection before the answer is read.
  awaitable<void> LingeringClose(beast::tcp_stream& stream) {
    beast::error_code ignored;
    stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
    std::array<char, 1024> sink;
    stream.expires_after(std::chrono::seconds(1));
    while (true) {
      auto [ec, n] = co_await stream.async_read_some(asio::buffer(sink), kTuple);
      if (ec) break;
    }
  }

  static std::string Peer(beast::tcp_stream& stream) {
    beast::error_code ec;
    auto ep = stream.socket().remote_endpoint(ec);
    return ec ? "?" : ep.address().to_string() + ":" + std::to_string(ep.port());
  }

  // Reads and answers requests on a connection until it closes, idles out, or the server stops.
  template <typename Stream>
  awaitable<void> Requests(Stream& stream, beast::flat_buffer& buffer, SessionState* state) {
    while (!stopping_) {
      bhttp::request_parser<bhttp::empty_body> parser;
      parser.header_limit(static_cast<std::uint32_t>(options_.max_header_bytes));
      // No timer on the read: SweepIdle closes connections idle past idle_timeout, which costs
      // nothing per request (a per-read timer cost as much as the rest of a warm hit).
      auto [ec, n] = co_await bhttp::async_read_header(stream, buffer, parser, kTuple);
      if (ec == bhttp::error::header_limit) {
        Reply r = ErrorReply(
            431, "UNSUPPORTED",
            "request headers exceed " + std::to_string(options_.max_header_bytes) + " bytes");
        r.close = true;
        co_await Write(stream, r, false, false);
        break;
      }
      if (ec) break;  // closed, timed out, or not HTTP: drop it
      state->busy = true;
      auto start = std::chrono::steady_clock::now();
      Outcome outcome;
      bool keep = false;
      bool failed = false;
      try {
        Prepared fast;
        if (AnswerFromMemory(parser.get(), &fast, outcome)) {
          std::string_view body = fast.body ? std::string_view(fast.body->bytes) : "";
          keep = co_await WriteBlock(stream, std::move(fast.block), body, fast.keep_alive);
        } else {
          keep = co_await Handle(stream, parser.get(), outcome);
        }
      } catch (const std::exception& e) {
        spdlog::error("request {} failed with an exception: {}", std::string(parser.get().target()),
                      e.what());
        failed = true;
      } catch (...) {
        spdlog::error("request {} failed with an unknown exception",
                      std::string(parser.get().target()));
        failed = true;
      }
      if (failed && !outcome.sent) {
        Reply r = ErrorReply(500, "UNKNOWN", "internal error");
        r.close = true;
        outcome.status = 500;
        co_await Write(stream, r, false, false);
      }
      state->idle_since = SteadyNanos();
      state->busy = false;
      if (options_.access_log) {
        auto ms = std::chrono::duration_cast<std::chrono::microseconds>(
                      std::chrono::steady_clock::now() - start)
                      .count() /
                  1000.0;
        const auto& req = parser.get();
        spdlog::info("access method={} path={} status={} bytes={} ms={:.1f} cache={} upstream={}",
                     std::string(req.method_string()), std::string(req.target()), outcome.status,
                     outcome.bytes, ms, outcome.cache.empty() ? "-" : outcome.cache,
                     outcome.upstream.empty() ? "-" : outcome.upstream);
      }
      if (failed || !keep) break;
    }
  }

  // Runs a blocking call on `queue` and resumes the awaiting coroutine on its own executor;
  // nullopt (at once) when the queue refuses the work. `f` must outlive the co_await: callers
  // pass a named local of their frame. (No coroutine lambdas here: GCC 12 double-destroys their
  // captures.)
  template <typename F>
  auto RunOn(WorkQueue& queue, F& f, WorkQueue::Lane lane = WorkQueue::Lane::kNormal) {
    using R = std::invoke_result_t<F&>;
    return asio::async_initiate<const asio::use_awaitable_t<>&, void(std::optional<R>)>(
        [&queue, &f, lane](auto handler) {
          auto h = std::make_shared<decltype(handler)>(std::move(handler));
          auto finish = [h](std::optional<R> result) {
            auto ex = asio::get_associated_executor(*h);
            asio::post(ex, [h, result = std::move(result)]() mutable {
              std::move (*h)(std::move(result));
            });
          };
          if (!queue.TrySubmit([&f, finish] { finish(std::optional<R>(f())); }, lane)) {
            finish(std::nullopt);
          }
        },
        use_awaitable);
  }

  // The same on an upstream's request queue; a refusal becomes 503 + Retry-After.
  template <typename F>
  awaitable<std::invoke_result_t<F&>> RunUpstream(cache::Upstream& up, F& f) {
    auto r = co_await RunOn(up.requests(), f);
    if (r) co_return std::move(*r);
    metrics_.Count("regcache_upstream_refused_total",
                   "upstream=\"" + up.name() + "\",reason=\"overload\"");
    co_return upstream::WithRetryAfter(
        Unavailable("too many requests to upstream " + up.name() + " in flight"), 1);
  }

  // The same on the local workers (SQLite, blob files).
  template <typename F>
  awaitable<std::invoke_result_t<F&>> RunLocal(F& f) {
    auto r = co_await RunOn(local_, f);
    if (r) co_return std::move(*r);
    co_return Unavailable("local workers saturated");
  }

  // Locally produced errors (bad input, routing): their own message.
  Reply Error(const Status& s, Endpoint ep) {
    ErrorSpec spec = ErrorFor(s.code(), ep);
    Reply r = ErrorReply(static_cast<unsigned>(spec.status), spec.code, s.message());
    AddRetryAfter(r, s, nullptr);
    return r;
  }

  // Failures from the cache for `up`: a public message; the details go to the log.
  Reply UpstreamError(const Status& s, Endpoint ep, cache::Upstream& up, const Request& req) {
    if (s.code() != Code::kNotFound) {
      spdlog::warn("{} {}: {}", std::string(req.method_string()), std::string(req.target()),
                   s.ToString());
    }
    ErrorSpec spec = UpstreamErrorFor(s.code(), ep);
    Reply r =
        ErrorReply(static_cast<unsigned>(spec.status), spec.code, PublicMessage(s, ep, up.name()));
    AddRetryAfter(r, s, &up);
    return r;
  }

  // 429 and 503 always say when to come back.
  static void AddRetryAfter(Reply& r, const Status& s, cache::Upstream* up) {
    if (r.status != 429 && r.status != 503) return;
    int64_t ra = upstream::RetryAfterSeconds(s);
    if (ra <= 0 && up) ra = up->breaker().RetryAfterSeconds();
    if (ra <= 0) ra = r.status == 429 ? 60 : 1;
    r.headers.push_back({"Retry-After", std::to_string(ra)});
  }

  // Writes a status line, the headers and (unless `head`) the body in one gathered write, with
  // the write deadline. The header block is built here rather than by Beast's serializer: the
  // serializer walks each field as several small buffers, which costs more than the rest of a
  // cached-manifest hit.
  // Not a coroutine: the block moves into WriteBlock's frame; the body is the caller's.
  template <typename Stream>
  awaitable<bool> Write(Stream& stream, const Reply& r, bool head, bool keep_alive) {
    const bool keep = keep_alive && !r.close;
    const std::string_view body =
        r.shared ? std::string_view(r.shared->bytes) : std::string_view(r.body);
    const uint64_t length = head ? r.head_length.value_or(body.size()) : body.size();
    return WriteBlock(stream, HeaderBlock(r.status, r.headers, length, keep),
                      head ? std::string_view() : body, keep);
  }

  // Writes `block` then `body` (which must outlive the write) and returns whether the connection
  // can take another request. What the socket takes at once goes without a timer or a
  // suspension (the usual case for headers and manifests); the rest under the write deadline.
  awaitable<bool> WriteBlock(beast::tcp_stream& stream, std::string block, std::string_view body,
                             bool keep_alive) {
    std::array<asio::const_buffer, 2> buffers{asio::buffer(block),
                                              asio::buffer(body.data(), body.size())};
    const size_t total = block.size() + body.size();
    std::optional<size_t> sent = SendNow(stream.socket().native_handle(), block, body);
    if (!sent) co_return false;
    if (*sent == total) co_return keep_alive;
    beast::buffers_suffix<std::array<asio::const_buffer, 2>> rest(buffers);
    rest.consume(*sent);
    stream.expires_after(options_.write_timeout);
    auto [ec, n] = co_await asio::async_write(stream, rest, kTuple);
    stream.expires_never();
    co_return !ec && keep_alive;
  }

  // Through TLS every byte goes through the stream (no shortcut to the socket); Beast's
  // ssl_stream gathers a small block and body into one record.
  awaitable<bool> WriteBlock(TlsStream& stream, std::string block, std::string_view body,
                             bool keep_alive) {
    std::array<asio::const_buffer, 2> buffers{asio::buffer(block),
                                              asio::buffer(body.data(), body.size())};
    beast::get_lowest_layer(stream).expires_after(options_.write_timeout);
    auto [ec, n] = co_await asio::async_write(stream, buffers, kTuple);
    beast::get_lowest_layer(stream).expires_never();
    co_return !ec && keep_alive;
  }

  // Sends what the socket accepts without blocking; nullopt if the connection failed.
  static std::optional<size_t> SendNow(int fd, std::string_view a, std::string_view b) {
    size_t sent = 0;
    const size_t total = a.size() + b.size();
    while (sent < total) {
      iovec iov[2];
      int n = 0;
      if (sent < a.size()) {
        iov[n++] = {const_cast<char*>(a.data() + sent), a.size() - sent};
        if (!b.empty()) iov[n++] = {const_cast<char*>(b.data()), b.size()};
      } else {
        iov[n++] = {const_cast<char*>(b.data() + (sent - a.size())), total - sent};
      }
      msghdr msg{};
      msg.msg_iov = iov;
      msg.msg_iovlen = static_cast<size_t>(n);
      ssize_t w = ::sendmsg(fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (w < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) break;
        return std::nullopt;
      }
      sent += static_cast<size_t>(w);
    }
    return sent;
  }

  static std::string HeaderBlock(unsigned status, const Headers& headers, uint64_t length,
                                 bool keep) {
    HeaderBlockBuilder b(status);
    for (const auto& [k, v] : headers) b.Add(k, v);
    return std::move(b).Finish(length, keep);
  }

  Result<UpstreamChoice> Choose(const Route& route) {
    return ChooseUpstream(
        route,
        [this](const std::string& n) {
          auto* u = upstreams_.Find(n);
          return u ? u->name() : std::string();
        },
        upstreams_.Default()->name(),
        [this](const std::string& n) {
          auto* u = upstreams_.Find(n);
          return u && u->IsDockerHub();
        });
  }

  // Whether the request may go on: Ok, or the refusal (kUnauthenticated: 401, kRateLimited:
  // 429, kUnavailable: 503). A credential verified recently is decided here; one that needs a
  // bcrypt run is checked on auth_workers_, ahead of guesses if it verified before.
  awaitable<Status> Authenticate(const tcp::socket& socket, const Request& req) {
    std::string_view target(req.target().data(), req.target().size());
    if (!auth_->Required(target.substr(0, target.find('?')))) co_return Status::Ok();
    const std::string_view authorization = req[bhttp::field::authorization];
    beast::error_code ec;
    auto peer_ep = socket.remote_endpoint(ec);
    const std::string peer = ec ? std::string("unknown") : PeerAddress(peer_ep.address());
    Authenticator::Check check = Authenticator::Check::kDone;
    Status screened = auth_->Screen(authorization, peer, &check);
    if (!screened.ok() || check == Authenticator::Check::kDone) co_return screened;
    auto work = [this, authorization, &peer] { return auth_->Verify(authorization, peer); };
    const auto lane = check == Authenticator::Check::kKnownGood ? WorkQueue::Lane::kPriority
                                                                : WorkQueue::Lane::kNormal;
    auto verified = co_await RunOn(*auth_workers_, work, lane);
    if (verified) co_return std::move(*verified);
    co_return upstream::WithRetryAfter(Unavailable("too many logins being checked; retry shortly"),
                                       1);
  }

  static std::string PeerAddress(const asio::ip::address& a) {
    if (a.is_v6() && a.to_v6().is_v4_mapped()) {
      return asio::ip::make_address_v4(asio::ip::v4_mapped, a.to_v6()).to_string();
    }
    return a.to_string();
  }

  // A repository its upstream's allow/deny lists keep out: refused without asking upstream.
  Reply Denied(cache::Upstream& up, const std::string& repository) {
    metrics_.Count("regcache_repository_denied_total", "upstream=\"" + up.name() + "\"");
    return Error(
        Status(Code::kDenied, "repository " + repository + " may not be pulled through upstream " +
                                  up.name() + " (this cache's allow/deny lists)"),
        Endpoint::kOther);
  }

  // The warm hits, answered from memory on this thread without a coroutine frame: a manifest by
  // fresh tag or by digest, and a blob HEAD. Renders the response Handle would send into `p`;
  // false (nothing done) for anything else, which Handle then answers.
  bool AnswerFromMemory(const Request& req, Prepared* p, Outcome& out) {
    const bool head = req.method() == bhttp::verb::head;
    if (!head && req.method() != bhttp::verb::get) return false;
    if (req.version() < 11 || !req.keep_alive() || stopping_ || req.has_content_length() ||
        req.chunked()) {
      return false;
    }
    Endpoint ep;
    auto route = ParseTarget(std::string_view(req.target().data(), req.target().size()), &ep);
    if (!route.ok()) return false;
    const bool manifest = route->kind == RouteKind::kManifest;
    if (!manifest && !(head && route->kind == RouteKind::kBlob)) return false;
    if (auth_ && !auth_->Recognized(req[bhttp::field::authorization])) return false;
    auto choice = Choose(*route);
    if (!choice.ok()) return false;
    cache::Upstream* up = upstreams_.Find(choice->upstream);
    if (!up->Allows(choice->repository)) return false;
    HeaderBlockBuilder b(200);
    if (!choice->ns.empty()) b.Add("OCI-Namespace", choice->ns);
    auto add = [&b](std::string_view k, std::string_view v, bool quoted) { b.Add(k, v, quoted); };
    uint64_t length = 0;
    if (manifest) {
      auto lk = cache_.LookupManifest(*up, choice->repository, route->reference, true);
      if (!lk.ok() || lk->state != cache::LookupState::kHit) return false;
      const auto& m = lk->response.manifest;
      if (!AcceptsMediaType(req, m->media_type)) return false;
      ManifestFields(*m, add);
      length = m->bytes.size();
      if (!head) p->body = m;
      metrics_.Request("manifest", "hit", up->stats());
      if (!head) {
        metrics_.Served(up->stats(), length);
        up->stats()->pulls.Add(choice->repository);
      }
    } else {
      auto lk = cache_.LookupBlob(*up, choice->repository, route->digest, true, true);
      if (!lk.ok() || lk->state != cache::LookupState::kHit) return false;
      BlobFields(route->digest, add);
      length = lk->size;
      metrics_.Request("blob", "hit", up->stats());
    }
    p->keep_alive = true;
    p->block = std::move(b).Finish(length, true);
    out.status = 200;
    out.sent = true;
    out.cache = "hit";
    out.upstream = up->name();
    out.bytes = p->body ? length : 0;
    return true;
  }

  template <typename Stream>
  awaitable<bool> Handle(Stream& stream, Request& req, Outcome& out) {
    // HTTP/1.0 keep-alive is not offered: such clients get their answer and a close.
    const bool keep_alive = req.keep_alive() && req.version() >= 11 && !stopping_;
    const bool head = req.method() == bhttp::verb::head;
    const bool read_method = head || req.method() == bhttp::verb::get;
    // A request with a body we did not read cannot keep the connection.
    const bool can_keep = keep_alive && !(req.has_content_length() || req.chunked());
    if (auth_) {
      Status admitted = co_await Authenticate(beast::get_lowest_layer(stream).socket(), req);
      if (!admitted.ok()) {
        Reply reply = Error(admitted, Endpoint::kOther);
        if (reply.status == 401) reply.headers.push_back({"WWW-Authenticate", auth_->challenge()});
        co_return co_await Send(stream, reply, head, can_keep, out);
      }
    }
    Endpoint ep;
    auto route = ParseTarget(std::string(req.target()), &ep);
    if (!route.ok()) {
      Reply reply = Error(route.status(), ep);
      co_return co_await Send(stream, reply, head, can_keep, out);
    }

    if (route->kind == RouteKind::kHealth) {
      {
        Reply reply = MakeReply(200, "text/plain", "ok\n");
        co_return co_await Send(stream, reply, head, can_keep, out);
      }
    }
    if (route->kind == RouteKind::kReady) {
      // Liveness is /healthz; this says whether the cache works fully: one reason per part that
      // does not. Degraded storage still serves (misses pass through), so balancers may prefer
      // another node but need not.
      nlohmann::json why = nlohmann::json::object();
      if (auto s = cache_.StorageDegraded(); !s.empty()) why["storage"] = s;
      if (auto s = cache_.MetadataDegraded(); !s.empty()) why["metadata"] = s;
      if (auto s = TlsUnready(); !s.empty()) why["tls"] = s;
      Reply reply = why.empty() ? MakeReply(200, "text/plain", "ready\n") : DegradedReply(why);
      co_return co_await Send(stream, reply, head, can_keep, out);
    }
    if (route->kind == RouteKind::kMetrics) {
      for (auto* u : upstreams_.All()) {
        auto rl = u->client().rate_limit();
        if (rl.remaining >= 0) metrics_.SetRateLimitRemaining(u->name(), rl.remaining);
        const std::string label = "upstream=\"" + u->name() + "\"";
        metrics_.SetGauge("regcache_upstream_breaker_state", label,
                          static_cast<int64_t>(u->breaker().state()));
        metrics_.SetGauge("regcache_upstream_queue", label,
                          static_cast<int64_t>(u->requests().load() + u->fills().load()));
      }
      if (tls_) {
        metrics_.SetGauge("regcache_tls_handshakes_in_progress", "",
                          static_cast<int64_t>(handshakes_.in_progress()));
      }
      {
        Reply reply = MakeReply(200, "text/plain; version=0.0.4", metrics_.Render());
        co_return co_await Send(stream, reply, head, can_keep, out);
      }
    }
    if (!read_method || route->kind == RouteKind::kUpload) {
      Reply r = ErrorReply(405, "UNSUPPORTED", "this registry is a read-only pull-through cache");
      r.headers.push_back({"Allow", "GET, HEAD"});
      co_return co_await Send(stream, r, head, can_keep, out);
    }
    if (route->kind == RouteKind::kBase) {
      {
        Reply reply = MakeReply(200, "application/json", "{}");
        co_return co_await Send(stream, reply, head, can_keep, out);
      }
    }
    if (route->kind == RouteKind::kStatus) {
      // Rendering takes a few hundred microseconds: on a local worker, off the event loop.
      auto work = [this]() -> Result<std::string> { return status_.Render(); };
      auto page = co_await RunLocal(work);
      Reply reply = StatusReply(std::move(page));
      co_return co_await Send(stream, reply, head, can_keep, out);
    }

    auto choice = Choose(*route);
    if (!choice.ok()) {
      {
        Reply reply = Error(choice.status(), Endpoint::kOther);
        co_return co_await Send(stream, reply, head, can_keep, out);
      }
    }
    cache::Upstream* up = upstreams_.Find(choice->upstream);
    out.upstream = up->name();
    out.stats = up->stats();
    if (!up->Allows(choice->repository)) {
      Reply reply = Denied(*up, choice->repository);
      co_return co_await Send(stream, reply, head, can_keep, out);
    }
    Headers common;
    if (!choice->ns.empty()) common.push_back({"OCI-Namespace", choice->ns});
    const std::string repo = choice->repository;

    switch (route->kind) {
      case RouteKind::kManifest:
        co_return co_await ServeManifest(stream, req, *up, repo, route->reference, common, can_keep,
                                         head, out);
      case RouteKind::kBlob:
        co_return co_await ServeBlob(stream, req, *up, repo, route->reference, common, can_keep,
                                     head, out);
      case RouteKind::kTags: {
        if (route->tag_list.n == 0u) {
          // The spec: an empty list without a Link, whatever the repository holds; nobody asked.
          out.cache = "hit";
          Reply reply = WithCommon(
              MakeReply(200, "application/json",
                        nlohmann::json({{"name", repo}, {"tags", nlohmann::json::array()}}).dump()),
              common);
          co_return co_await Send(stream, reply, head, can_keep, out);
        }
        std::string query = route->tag_list.String();
        auto work = [this, up, &repo, &query] { return cache_.Tags(*up, repo, query); };
        auto t = co_await RunUpstream(*up, work);
        if (!t.ok()) {
          {
            Reply reply = WithCommon(UpstreamError(t.status(), Endpoint::kTags, *up, req), common);
            co_return co_await Send(stream, reply, head, can_keep, out);
          }
        }
        out.cache = t->result;
        Reply r;
        r.status = static_cast<unsigned>(t->status);
        r.headers = common;
        r.headers.push_back(
            {"Content-Type", t->content_type.empty() ? "application/json" : t->content_type});
        if (!t->warning.empty()) r.headers.push_back({"Warning", t->warning});
        if (!t->link.empty()) {
          // Point the next page at this server's path for the repository, as the client named it.
          size_t q = t->link.find('?'), gt = t->link.find('>');
          if (q != std::string::npos && gt != std::string::npos && q < gt) {
            std::string ns = choice->ns.empty() ? "" : "&ns=" + UrlEncode(choice->ns);
            r.headers.push_back({"Link", "</v2/" + route->name + "/tags/list" +
                                             t->link.substr(q, gt - q) + ns + t->link.substr(gt)});
          }
        }
        r.body = std::move(t->body);
        co_return co_await Send(stream, r, head, can_keep, out);
      }
      case RouteKind::kReferrers: {
        auto d = oci::Digest::Parse(route->reference).value();
        std::string query = route->raw_query.empty() ? "" : "?" + route->raw_query;
        auto work = [this, up, &repo, &d, &query] { return cache_.Referrers(*up, repo, d, query); };
        auto t = co_await RunUpstream(*up, work);
        if (!t.ok()) {
          {
            Reply reply =
                WithCommon(UpstreamError(t.status(), Endpoint::kReferrers, *up, req), common);
            co_return co_await Send(stream, reply, head, can_keep, out);
          }
        }
        out.cache = t->result;
        Reply r;
        r.status = static_cast<unsigned>(t->status);
        r.headers = common;
        r.headers.push_back({"Content-Type", t->content_type.empty() ? std::string(oci::kOciIndex)
                                                                     : t->content_type});
        if (!t->filters_applied.empty()) {
          r.headers.push_back({"OCI-Filters-Applied", t->filters_applied});
        }
        r.body = std::move(t->body);
        co_return co_await Send(stream, r, head, can_keep, out);
      }
      default: {
        Reply reply = Error(NotFound("no such endpoint"), Endpoint::kOther);
        co_return co_await Send(stream, reply, head, can_keep, out);
      }
    }
  }

  // /readyz's 503: {"status": "degraded", PART: why, …}.
  static Reply DegradedReply(nlohmann::json why) {
    why["status"] = "degraded";
    return MakeReply(503, "application/json", why.dump());
  }

  // The status page, never cached; no script, style inline, nothing loaded from elsewhere.
  Reply StatusReply(Result<std::string> page) {
    if (!page.ok()) return Error(page.status(), Endpoint::kOther);
    Reply r = MakeReply(200, "text/html; charset=utf-8", std::move(*page));
    r.headers.push_back({"Cache-Control", "no-store"});
    r.headers.push_back({"X-Content-Type-Options", "nosniff"});
    r.headers.push_back({"Content-Security-Policy",
                         "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'"});
    return r;
  }

  static Reply WithCommon(Reply r, const Headers& common) {
    r.headers.insert(r.headers.end(), common.begin(), common.end());
    return r;
  }

  // `r` is a named local of the caller: GCC 12 destroys temporaries inside co_await expressions
  // twice (seen as a double free), so no reply is ever built inside one.
  // Not a coroutine itself: one frame less on every response.
  template <typename Stream>
  awaitable<bool> Send(Stream& stream, const Reply& r, bool head, bool keep_alive, Outcome& out) {
    out.status = r.status;
    out.bytes = head ? 0 : (r.shared ? r.shared->bytes.size() : r.body.size());
    out.sent = true;
    return Write(stream, r, head, keep_alive);
  }

  // Parks until `flight` completes or `wait` passes.
  awaitable<void> WaitForFlight(const std::shared_ptr<cache::Flight>& flight,
                                std::chrono::milliseconds wait) {
    auto timer = std::make_shared<asio::steady_timer>(co_await asio::this_coro::executor, wait);
    flight->OnDone(Waker(timer));
    if (!flight->done()) co_await timer->async_wait(kTuple);
  }

  // A manifest lookup the in-memory index could not decide, on a local worker.
  awaitable<Result<cache::ManifestLookup>> LookupManifestInStore(cache::Upstream& up,
                                                                 const std::string& repo,
                                                                 const std::string& ref) {
    auto work = [this, &up, &repo, &ref] { return cache_.LookupManifest(up, repo, ref, false); };
    co_return co_await RunLocal(work);
  }

  template <typename Stream>
  awaitable<bool> ServeManifest(Stream& stream, Request& req, cache::Upstream& up,
                                const std::string& repo, const std::string& ref,
                                const Headers& common, bool keep_alive, bool head, Outcome& out) {
    // In memory first, on this thread: no frame, no hop for a hit.
    auto lk = cache_.LookupManifest(up, repo, ref, true);
    if (lk.ok() && lk->state == cache::LookupState::kNeedStore) {
      lk = co_await LookupManifestInStore(up, repo, ref);
    }
    if (!lk.ok()) {
      metrics_.Request("manifest", "error", up.stats());
      {
        Reply reply = WithCommon(UpstreamError(lk.status(), Endpoint::kManifest, up, req), common);
        co_return co_await Send(stream, reply, head, keep_alive, out);
      }
    }
    cache::ManifestResponse m;
    if (lk->state == cache::LookupState::kStale) {
      // One revalidation per tag in flight; only the request that started it waits, and only
      // briefly. Everyone else is answered from cache at once.
      bool started = false;
      auto flight = cache_.Revalidate(up, repo, ref, &started);
      std::string why = flight ? "revalidating" : "upstream unavailable";
      if (flight && started && options_.revalidate_wait.count() > 0) {
        co_await WaitForFlight(flight, options_.revalidate_wait);
        if (flight->done()) {
          auto again = co_await LookupManifestInStore(up, repo, ref);
          if (again.ok() && (again->state == cache::LookupState::kHit ||
                             again->state == cache::LookupState::kCold)) {
            lk = std::move(again);
            if (lk->state == cache::LookupState::kHit) lk->response.result = "revalidated";
          } else if (!flight->status().ok()) {
            why = std::string("upstream ") + CodeName(flight->status().code());
          }
        }
      }
      if (lk->state == cache::LookupState::kStale) {
        m = std::move(lk->response);
        m.result = "stale";
        m.warning = "110 regcache \"Response is stale: " + why + "\"";
      }
    }
    if (lk->state == cache::LookupState::kHit) m = std::move(lk->response);
    if (lk->state == cache::LookupState::kCold) {
      auto work = [this, &up, &repo, &ref] { return cache_.FetchManifest(up, repo, ref); };
      auto fetched = co_await RunUpstream(up, work);
      if (!fetched.ok()) {
        metrics_.Request("manifest", "error", up.stats());
        {
          Reply reply =
              WithCommon(UpstreamError(fetched.status(), Endpoint::kManifest, up, req), common);
          co_return co_await Send(stream, reply, head, keep_alive, out);
        }
      }
      m = std::move(*fetched);
    }
    metrics_.Request("manifest", m.result, up.stats());
    out.cache = m.result;
    if (!AcceptsMediaType(req, m.manifest->media_type)) {
      {
        Reply reply = Error(NotFound("manifest is " + m.manifest->media_type +
                                     ", which the client does not accept"),
                            Endpoint::kManifest);
        co_return co_await Send(stream, reply, head, keep_alive, out);
      }
    }
    Reply r;
    r.headers = common;
    ManifestFields(*m.manifest, AppendTo(r.headers));
    if (!m.warning.empty()) r.headers.push_back({"Warning", m.warning});
    r.shared = m.manifest;
    if (!head) {
      metrics_.Served(up.stats(), m.manifest->bytes.size());
      up.stats()->pulls.Add(repo);
    }
    co_return co_await Send(stream, r, head, keep_alive, out);
  }

  // A blob lookup the in-memory index could not decide, on a local worker.
  awaitable<Result<cache::BlobLookup>> LookupBlobInStore(cache::Upstream& up,
                                                         const std::string& repo,
                                                         const oci::Digest& digest, bool head) {
    auto work = [this, &up, &repo, &digest, head] {
      return cache_.LookupBlob(up, repo, digest, head, false);
    };
    co_return co_await RunLocal(work);
  }

  // Parks until the fill moves past `seen` or `at_most` passes (readers re-check either way).
  awaitable<void> ParkOnFill(cache::Fill& fill, const cache::Fill::State& seen,
                             std::chrono::steady_clock::duration at_most) {
    auto timer = std::make_shared<asio::steady_timer>(co_await asio::this_coro::executor, at_most);
    fill.WaitForChange(seen, Waker(timer));
    co_await timer->async_wait(kTuple);
  }

  // Parks until `done(state)` holds for the fill, or `limit` passes; returns the last state.
  awaitable<cache::Fill::State> WaitForFill(cache::Fill& fill,
                                            bool (*done)(const cache::Fill::State&),
                                            std::chrono::steady_clock::duration limit) {
    const auto until = std::chrono::steady_clock::now() + limit;
    while (true) {
      auto state = fill.Snapshot();
      if (done(state) || stopping_ || std::chrono::steady_clock::now() >= until) co_return state;
      co_await ParkOnFill(fill, state, std::chrono::seconds(1));
    }
  }

  template <typename Stream>
  awaitable<bool> ServeBlob(Stream& stream, Request& req, cache::Upstream& up,
                            const std::string& repo, const std::string& ref, const Headers& common,
                            bool keep_alive, bool head, Outcome& out) {
    auto digest = oci::Digest::Parse(ref).value();
    auto fail = [&](const Status& s) -> Reply {
      metrics_.Request("blob", "error", up.stats());
      return WithCommon(UpstreamError(s, Endpoint::kBlob, up, req), common);
    };
    auto lk = cache_.LookupBlob(up, repo, digest, head, true);
    if (lk.ok() && lk->state == cache::LookupState::kNeedStore) {
      lk = co_await LookupBlobInStore(up, repo, digest, head);
    }
    if (lk.ok() && lk->state == cache::LookupState::kUnlinked) {
      // Unknown in this repository: only upstream can say it is there.
      auto work = [this, &up, &repo, &digest] { return cache_.ConfirmBlob(up, repo, digest); };
      auto confirmed = co_await RunUpstream(up, work);
      if (!confirmed.ok()) {
        Reply reply = fail(confirmed.status());
        co_return co_await Send(stream, reply, head, keep_alive, out);
      }
      lk = co_await LookupBlobInStore(up, repo, digest, head);
      if (lk.ok() && lk->state == cache::LookupState::kUnlinked) {
        lk = NotFound("blob is not linked");
      }
    }
    if (!lk.ok()) {
      Reply reply = fail(lk.status());
      co_return co_await Send(stream, reply, head, keep_alive, out);
    }

    int fd = lk->fd;
    uint64_t size = lk->size;
    std::string result = "hit";
    std::shared_ptr<cache::Fill> fill;
    std::optional<FillReader> reader;
    if (lk->state == cache::LookupState::kCold) {
      result = "miss";
      if (head) {
        if (size == 0) {
          auto work = [this, &up, &repo, &digest] { return cache_.ConfirmBlob(up, repo, digest); };
          auto confirmed = co_await RunUpstream(up, work);
          if (!confirmed.ok()) {
            Reply reply = fail(confirmed.status());
            co_return co_await Send(stream, reply, head, keep_alive, out);
          }
          size = *confirmed;
        }
      } else {
        const uint64_t descriptor_size = size;
        // At most twice: a fill started through another repository may fail for reasons of that
        // repository alone (absent or forbidden there); then this request fetches through its own.
        for (int attempt = 0; attempt < 2 && fd < 0 && !fill; ++attempt) {
          auto started = cache_.StartFill(up, repo, digest);
          if (!started.ok()) {
            Reply reply = fail(started.status());
            co_return co_await Send(stream, reply, head, keep_alive, out);
          }
          if (started->fd >= 0) {
            fd = started->fd;
            size = started->size;
            result = "hit";
            break;
          }
          result = started->joined ? "coalesced" : "miss";
          // Registered before the fill starts: a fill that is not stored keeps only a window of
          // bytes in memory, and must not move it past a reader that has not begun.
          reader.emplace(started->fill, started->fill->AddReader(0));
          // No status line before upstream answered: its failure must reach the client as one.
          auto state = co_await WaitForFill(
              *started->fill, [](const cache::Fill::State& s) { return s.started || s.done; },
              options_.fill_start_timeout);
          if (state.done && !state.status.ok()) {
            const Code c = state.status.code();
            if (attempt == 0 && started->fill->repo() != repo &&
                (c == Code::kNotFound || c == Code::kDenied || c == Code::kUnauthenticated)) {
              continue;
            }
            // The backing registry's copy failed before this client had a byte of it: the next
            // fill skips that copy (Backing::Distrusted) and asks the upstream.
            if (attempt == 0 && state.status.origin() == Origin::kBacking) continue;
            {
              Reply reply = fail(state.status);
              co_return co_await Send(stream, reply, head, keep_alive, out);
            }
          }
          if (!state.started) {
            {
              Reply reply = fail(Unavailable("upstream did not begin sending the blob in time"));
              co_return co_await Send(stream, reply, head, keep_alive, out);
            }
          }
          if (descriptor_size > 0 && descriptor_size != state.size) {
            // This repository's manifest disagrees with upstream's blob: fail this request only.
            {
              Reply reply =
                  fail(Integrity("descriptor size " + std::to_string(descriptor_size) +
                                 " differs from upstream's " + std::to_string(state.size)));
              co_return co_await Send(stream, reply, head, keep_alive, out);
            }
          }
          fill = started->fill;
          size = state.size;
        }
        if (fd < 0 && !fill) {
          {
            Reply reply = fail(NotFound("blob is not available"));
            co_return co_await Send(stream, reply, head, keep_alive, out);
          }
        }
      }
    }
    struct FdCloser {
      int* fd;
      ~FdCloser() {
        if (*fd >= 0) ::close(*fd);
      }
    } closer{&fd};
    metrics_.Request("blob", result, up.stats());
    out.cache = result;

    ByteRange range = head ? ByteRange{ByteRange::kFull, 0, size}
                           : ParseRange(std::string(req[bhttp::field::range]), size);
    if (range.kind == ByteRange::kUnsatisfiable) {
      Reply r =
          ErrorReply(416, "SIZE_INVALID",
                     "range '" + std::string(req[bhttp::field::range]) +
                         "' is not satisfiable for a blob of " + std::to_string(size) + " bytes");
      r.headers.push_back({"Content-Range", "bytes */" + std::to_string(size)});
      {
        Reply reply = WithCommon(std::move(r), common);
        co_return co_await Send(stream, reply, head, keep_alive, out);
      }
    }
    if (fill && fill->memory()) {
      // Not being stored: nothing is kept to verify a range against, so the whole blob is sent
      // (a server may ignore Range), with its last byte held until the digest verified.
      range = ByteRange{ByteRange::kFull, 0, size};
    }
    if (fill && range.kind == ByteRange::kPartial) {
      // Only verified bytes are served: a range waits for the fill to commit, then reads the
      // committed file (a full GET follows the fill, its last byte held until verification).
      auto state = co_await WaitForFill(
          *fill, [](const cache::Fill::State& s) { return s.done; }, std::chrono::hours(24));
      if (!state.done || !state.status.ok()) {
        {
          Reply reply = fail(state.done ? state.status : Unavailable("server is shutting down"));
          co_return co_await Send(stream, reply, head, keep_alive, out);
        }
      }
      auto opened = cache_.OpenCommitted(digest);
      if (!opened.ok() && opened.status().code() == Code::kNotFound) {
        // Served without being stored (no room): the verified bytes are in the fill's file.
        int copy = ::dup(fill->fd());
        opened = copy >= 0 ? Result<int>(copy) : Result<int>(IoError("dup failed"));
      }
      if (!opened.ok()) {
        Reply reply = fail(opened.status());
        co_return co_await Send(stream, reply, head, keep_alive, out);
      }
      fd = *opened;
      fill.reset();
    }

    Headers headers = common;
    BlobFields(digest, AppendTo(headers));
    unsigned status = 200;
    if (range.kind == ByteRange::kPartial) {
      status = 206;
      headers.push_back({"Content-Range", "bytes " + std::to_string(range.start) + "-" +
                                              std::to_string(range.start + range.length - 1) + "/" +
                                              std::to_string(size)});
    }
    out.status = status;
    out.sent = true;
    std::string block = HeaderBlock(status, headers, range.length, keep_alive);
    beast::get_lowest_layer(stream).expires_after(options_.write_timeout);
    auto [ec, n] = co_await asio::async_write(stream, asio::buffer(block), kTuple);
    beast::get_lowest_layer(stream).expires_never();
    if (ec || head) co_return !ec && keep_alive;

    Status sent;
    if (fill && fill->memory()) {
      metrics_.fill_waiters++;
      sent = co_await SendFromMemory(stream, *fill, reader->id, range.length, out);
      metrics_.fill_waiters--;
    } else if (fill) {
      metrics_.fill_waiters++;
      sent = co_await SendFromFill(stream, *fill, range.start, range.length, out);
      metrics_.fill_waiters--;
    } else {
      sent = co_await SendFile(stream, fd, range.start, range.length, out);
    }
    // A body cut short (fill failed, client gone) leaves the connection unusable: close it.
    co_return sent.ok() && keep_alive;
  }

  // A reader of a fill, registered for as long as it may read (see Fill::AddReader).
  struct FillReader {
    FillReader(std::shared_ptr<cache::Fill> f, int i) : fill(std::move(f)), id(i) {}
    ~FillReader() { fill->RemoveReader(id); }
    FillReader(const FillReader&) = delete;
    FillReader& operator=(const FillReader&) = delete;
    std::shared_ptr<cache::Fill> fill;
    int id;
  };

  // Relays a fill that is not being stored from its window in memory.
  template <typename Stream>
  awaitable<Status> SendFromMemory(Stream& stream, cache::Fill& fill, int reader, uint64_t length,
                                   Outcome& out) {
    std::vector<char> chunk(256 * 1024);
    uint64_t offset = 0;
    while (offset < length) {
      auto state = fill.Snapshot();
      if (state.done && !state.status.ok()) co_return state.status;
      auto got = fill.CopyOut(reader, offset, chunk.data(), chunk.size());
      if (!got.ok()) co_return got.status();
      if (*got > 0) {
        Status s = co_await WriteBody(stream, chunk.data(), *got, out);
        if (!s.ok()) co_return s;
        offset += *got;
        fill.ReaderProgress(reader, offset);
        continue;
      }
      if (stopping_ && state.done) co_return Unavailable("server is shutting down");
      co_await ParkOnFill(fill, state, std::chrono::seconds(5));
    }
    co_return Status::Ok();
  }

  // Writes a piece of a body under the write deadline, and counts it as served.
  template <typename Stream>
  awaitable<Status> WriteBody(Stream& stream, const char* data, size_t size, Outcome& out) {
    beast::get_lowest_layer(stream).expires_after(options_.write_timeout);
    auto [ec, n] = co_await asio::async_write(stream, asio::buffer(data, size), kTuple);
    beast::get_lowest_layer(stream).expires_never();
    if (ec) co_return Unavailable("client connection: " + ec.message());
    out.bytes += size;
    metrics_.Served(out.stats, size);
    co_return Status::Ok();
  }

  // Through TLS a file's bytes must pass through user space: read and written in pieces.
  awaitable<Status> SendFile(TlsStream& stream, int fd, uint64_t offset, uint64_t length,
                             Outcome& out) {
    std::vector<char> chunk(static_cast<size_t>(std::min<uint64_t>(length, 256 * 1024)));
    while (length > 0) {
      ssize_t n = ::pread(fd, chunk.data(), std::min<uint64_t>(length, chunk.size()),
                          static_cast<off_t>(offset));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) co_return IoError(std::string("reading a blob: ") + std::strerror(errno));
      if (n == 0) co_return IoError("file ended early");
      Status s = co_await WriteBody(stream, chunk.data(), static_cast<size_t>(n), out);
      if (!s.ok()) co_return s;
      offset += static_cast<uint64_t>(n);
      length -= static_cast<uint64_t>(n);
    }
    co_return Status::Ok();
  }

  // Waits until the socket can take more bytes, or gives up after the write timeout.
  awaitable<bool> WaitWritable(beast::tcp_stream& stream) {
    asio::steady_timer timer(stream.get_executor(), options_.write_timeout);
    auto r = co_await (stream.socket().async_wait(tcp::socket::wait_write, kTuple) ||
                       timer.async_wait(kTuple));
    co_return r.index() == 0 && !std::get<0>(std::get<0>(r));
  }

  awaitable<Status> SendFile(beast::tcp_stream& stream, int fd, uint64_t offset, uint64_t length,
                             Outcome& out) {
    auto& sock = stream.socket();
    if (!sock.native_non_blocking()) sock.native_non_blocking(true);
    off_t off = static_cast<off_t>(offset);
    uint64_t left = length;
    while (left > 0) {
      ssize_t n = ::sendfile(sock.native_handle(), fd, &off,
                             static_cast<size_t>(std::min<uint64_t>(left, 4u << 20)));
      if (n > 0) {
        left -= static_cast<uint64_t>(n);
        out.bytes += static_cast<uint64_t>(n);
        metrics_.Served(out.stats, static_cast<uint64_t>(n));
        continue;
      }
      if (n == 0) co_return IoError("file ended early");
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        if (!co_await WaitWritable(stream)) co_return Unavailable("client stalled or went away");
        continue;
      }
      co_return Unavailable(std::string("client connection: ") + std::strerror(errno));
    }
    co_return Status::Ok();
  }

  template <typename Stream>
  awaitable<Status> SendFromFill(Stream& stream, cache::Fill& fill, uint64_t offset,
                                 uint64_t length, Outcome& out) {
    const uint64_t end = offset + length;
    while (offset < end) {
      auto state = fill.Snapshot();
      if (state.done && !state.status.ok()) {
        co_return state.status;  // cut the client off: its length check fails, it retries
      }
      if (state.readable > offset) {
        uint64_t n = std::min(state.readable, end) - offset;
        Status s = co_await SendFile(stream, fill.fd(), offset, n, out);
        if (!s.ok()) co_return s;
        offset += n;
        continue;
      }
      if (stopping_ && state.done) co_return Unavailable("server is shutting down");
      co_await ParkOnFill(fill, state, std::chrono::seconds(5));
    }
    co_return Status::Ok();
  }

  ServerOptions options_;
  cache::PullThroughCache& cache_;
  cache::UpstreamSet& upstreams_;
  cache::Metrics& metrics_;
  uint16_t port_ = 0;
  std::atomic<bool> stopping_{false};
  std::atomic<bool> refusing_{false};
  std::chrono::steady_clock::time_point deadline_;
  std::mutex sessions_mu_;
  std::set<std::shared_ptr<SessionState>> sessions_;
  WorkQueue local_;
  // With authentication configured: the credentials, and the threads bcrypt runs on (apart from
  // local lookups, so that a flood of logins cannot delay hits that need SQLite).
  std::shared_ptr<Authenticator> auth_;
  std::unique_ptr<WorkQueue> auth_workers_;
  std::unique_ptr<TlsContexts> tls_;       // null: plain HTTP
  std::atomic<int> certificate_state_{0};  // CertificateState last logged
  HandshakeSlots handshakes_;              // TLS handshakes past their ClientHello
  // Which wrong-protocol clients and failed handshakes get a log line (per kind and address),
  // and when the handshake cap does.
  OncePerInterval protocol_notes_{std::chrono::minutes(kProtocolNoteMinutes), 4096};
  OncePerInterval cap_notes_{std::chrono::minutes(1), 1};
  StatusPage status_;
  // Declared last and torn down first (see the destructor): coroutine frames use the above.
  // ioc_ runs the acceptor, signals and timers and one share of the connections, on the thread
  // that called Run(); each of workers_ runs the other shares, one thread each.
  std::unique_ptr<asio::io_context> ioc_;
  std::vector<std::unique_ptr<asio::io_context>> workers_;
  std::vector<asio::executor_work_guard<asio::io_context::executor_type>> worker_guards_;
  size_t next_loop_ = 0;  // Listen's turn; only Listen touches it
  std::unique_ptr<tcp::acceptor> acceptor_;
  std::unique_ptr<asio::signal_set> signals_;
};

void RaiseFileLimit() {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
}

}  // namespace

size_t DefaultMaxConnections(uint64_t descriptors, uint64_t memory_bytes, bool tls) {
  // Leave descriptors for blob files, fills, upstream connections and SQLite.
  const uint64_t by_descriptors = descriptors > 2048 ? descriptors - 1024 : descriptors / 2;
  const uint64_t by_memory =
      memory_bytes / kConnectionMemoryShare / (tls ? kTlsConnectionBytes : kConnectionBytes);
  return static_cast<size_t>(std::min(by_descriptors, std::max<uint64_t>(64, by_memory)));
}

Result<std::unique_ptr<Server>> CreateServer(ServerOptions options, cache::PullThroughCache& cache,
                                             cache::UpstreamSet& upstreams, cache::Metrics& metrics,
                                             std::shared_ptr<Authenticator> auth) {
  RaiseFileLimit();
  auto server =
      std::make_unique<ServerImpl>(std::move(options), cache, upstreams, metrics, std::move(auth));
  RC_RETURN_IF_ERROR(server->Bind());
  return std::unique_ptr<Server>(std::move(server));
}

}  // namespace regcache::http

#include "http/server.h"

#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <sys/sendfile.h>
#include <unistd.h>

#include <atomic>
#include <boost/asio.hpp>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <cerrno>
#include <cstring>
#include <set>
#include <thread>

#include "base/strings.h"
#include "http/errors.h"
#include "http/range.h"
#include "http/route.h"
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

using Headers = std::vector<std::pair<std::string, std::string>>;

struct Reply {
  unsigned status = 200;
  Headers headers;
  std::string body;
  std::optional<uint64_t> head_length;  // Content-Length to announce on HEAD
  bool close = false;
};

// What the access log records about one request.
struct Outcome {
  unsigned status = 0;
  uint64_t bytes = 0;
  std::string cache;  // hit, miss, stale, …
  std::string upstream;
};

bool AcceptsMediaType(const bhttp::request<bhttp::empty_body>& req, const std::string& media_type) {
  bool any_accept = false;
  for (auto it = req.find(bhttp::field::accept);
       it != req.end() && it->name() == bhttp::field::accept; ++it) {
    any_accept = true;
    for (const auto& part : Split(std::string(it->value()), ',')) {
      std::string t(Trim(part.substr(0, part.find(';'))));
      if (t == "*/*" || t == media_type) return true;
      if (t == "application/*" && StartsWith(media_type, "application/")) return true;
    }
  }
  return !any_accept;
}

// Built outside coroutines: GCC 12 miscompiles aggregate initialization from string literals
// inside co_await expressions ("array used as initializer").
Reply MakeReply(unsigned status, const std::string& content_type, std::string body) {
  Reply r;
  r.status = status;
  r.headers.push_back({"Content-Type", content_type});
  r.body = std::move(body);
  return r;
}

// Shared between a session and shutdown. Both touch it only on the session's strand, so `closed`
// (set before the stream is destroyed) tells a late shutdown closure to leave it alone.
struct SessionState {
  asio::any_io_executor executor;
  beast::tcp_stream* stream = nullptr;
  std::atomic<bool> busy{false};
  bool closed = false;
};

class ServerImpl : public Server {
 public:
  ServerImpl(ServerOptions options, cache::PullThroughCache& cache, cache::UpstreamSet& upstreams,
             cache::Metrics& metrics)
      : options_(std::move(options)),
        cache_(cache),
        upstreams_(upstreams),
        metrics_(metrics),
        ioc_(options_.io_threads),
        acceptor_(ioc_),
        signals_(ioc_, SIGINT, SIGTERM),
        workers_(static_cast<size_t>(options_.worker_threads)) {}

  ~ServerImpl() override { workers_.join(); }

  Status Bind() {
    beast::error_code ec;
    auto address = asio::ip::make_address(options_.host == "" ? "0.0.0.0" : options_.host, ec);
    if (ec) return InvalidArgument("invalid listen address '" + options_.host + "'");
    tcp::endpoint ep(address, options_.port);
    acceptor_.open(ep.protocol(), ec);
    if (!ec) acceptor_.set_option(asio::socket_base::reuse_address(true), ec);
    if (!ec) acceptor_.bind(ep, ec);
    if (!ec) acceptor_.listen(1024, ec);
    if (ec) {
      return IoError("cannot listen on " + options_.host + ":" + std::to_string(options_.port) +
                     ": " + ec.message());
    }
    port_ = acceptor_.local_endpoint().port();
    return Status::Ok();
  }

  uint16_t port() const override { return port_; }

  void Run() override {
    asio::co_spawn(ioc_, Listen(), asio::detached);
    signals_.async_wait([this](const beast::error_code& ec, int sig) {
      if (!ec) {
        spdlog::info("signal {}: shutting down (grace {} s)", sig, options_.shutdown_grace.count());
        BeginShutdown();
      }
    });
    std::vector<std::thread> threads;
    for (int i = 1; i < options_.io_threads; ++i) threads.emplace_back([this] { ioc_.run(); });
    ioc_.run();
    for (auto& t : threads) t.join();
  }

  void Stop() override {
    asio::post(ioc_, [this] { BeginShutdown(); });
  }

 private:
  void BeginShutdown() {
    if (stopping_.exchange(true)) return;
    beast::error_code ec;
    acceptor_.close(ec);
    signals_.cancel();
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
    auto timer = std::make_shared<asio::steady_timer>(ioc_, std::chrono::milliseconds(50));
    timer->async_wait([this, timer](const beast::error_code&) {
      size_t active;
      {
        std::lock_guard<std::mutex> lock(sessions_mu_);
        active = sessions_.size();
      }
      if (active == 0 || std::chrono::steady_clock::now() >= deadline_) {
        if (active > 0) spdlog::warn("shutdown grace over: dropping {} connection(s)", active);
        ioc_.stop();
        return;
      }
      WaitForDrain();
    });
  }

  awaitable<void> Listen() {
    while (!stopping_) {
      auto [ec, socket] = co_await acceptor_.async_accept(asio::make_strand(ioc_), kTuple);
      if (ec) {
        if (stopping_) co_return;
        if (ec == asio::error::no_descriptors) {
          spdlog::error("accept: out of file descriptors");
          asio::steady_timer t(ioc_, std::chrono::milliseconds(100));
          co_await t.async_wait(kTuple);
        }
        continue;
      }
      auto ex = socket.get_executor();
      asio::co_spawn(ex, Session(std::move(socket)), asio::detached);
    }
  }

  awaitable<void> Session(tcp::socket socket) {
    beast::tcp_stream stream(std::move(socket));
    auto state = std::make_shared<SessionState>();
    state->executor = stream.get_executor();
    state->stream = &stream;
    {
      std::lock_guard<std::mutex> lock(sessions_mu_);
      sessions_.insert(state);
    }
    metrics_.connections++;
    beast::flat_buffer buffer;
    while (!stopping_) {
      bhttp::request_parser<bhttp::empty_body> parser;
      parser.header_limit(static_cast<std::uint32_t>(options_.max_header_bytes));
      stream.expires_after(options_.idle_timeout);
      auto [ec, n] = co_await bhttp::async_read_header(stream, buffer, parser, kTuple);
      if (ec == bhttp::error::header_limit) {
        Reply r = Error(InvalidArgument("request headers exceed " +
                                        std::to_string(options_.max_header_bytes) + " bytes"),
                        Endpoint::kOther);
        r.status = 431;
        r.close = true;
        co_await Write(stream, r, false, false);
        break;
      }
      if (ec) break;  // closed, timed out, or not HTTP (e.g. a TLS ClientHello): drop it
      stream.expires_never();
      state->busy = true;
      auto start = std::chrono::steady_clock::now();
      Outcome outcome;
      bool keep = co_await Handle(stream, parser.get(), outcome);
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
      if (!keep) break;
    }
    beast::error_code ignored;
    stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
    state->closed = true;
    metrics_.connections--;
    std::lock_guard<std::mutex> lock(sessions_mu_);
    sessions_.erase(state);
  }

  // Runs a blocking call on the worker pool and resumes the awaiting coroutine on its own
  // executor. `f` must outlive the co_await: callers pass a named local of their frame. (No
  // coroutine lambdas here: GCC 12 double-destroys their captures.)
  template <typename F>
  auto Offload(F& f) {
    using R = std::invoke_result_t<F&>;
    return asio::async_initiate<const asio::use_awaitable_t<>&, void(std::optional<R>)>(
        [this, &f](auto handler) {
          asio::post(workers_, [handler = std::move(handler), &f]() mutable {
            std::optional<R> result(f());
            auto ex = asio::get_associated_executor(handler);
            asio::post(ex, [handler = std::move(handler), result = std::move(result)]() mutable {
              std::move(handler)(std::move(result));
            });
          });
        },
        use_awaitable);
  }

  Reply Error(const Status& s, Endpoint ep) {
    ErrorSpec spec = ErrorFor(s.code(), ep);
    Reply r;
    r.status = static_cast<unsigned>(spec.status);
    r.body = ErrorBody(spec.code, s.message());
    r.headers.push_back({"Content-Type", "application/json"});
    if (spec.status == 429) {
      int64_t ra = upstream::RetryAfterSeconds(s);
      r.headers.push_back({"Retry-After", std::to_string(ra > 0 ? ra : 60)});
    }
    return r;
  }

  awaitable<bool> Write(beast::tcp_stream& stream, const Reply& r, bool head, bool keep_alive) {
    bhttp::response<bhttp::string_body> res{static_cast<bhttp::status>(r.status), 11};
    res.set("Docker-Distribution-API-Version", "registry/2.0");
    for (const auto& [k, v] : r.headers) res.set(k, v);
    res.keep_alive(keep_alive && !r.close);
    if (head) {
      res.content_length(r.head_length.value_or(r.body.size()));
    } else {
      res.body() = r.body;
      res.prepare_payload();
    }
    auto [ec, n] = co_await bhttp::async_write(stream, res, kTuple);
    co_return !ec && keep_alive && !r.close;
  }

  awaitable<bool> Handle(beast::tcp_stream& stream, bhttp::request<bhttp::empty_body>& req,
                         Outcome& out) {
    const bool keep_alive = req.keep_alive() && !stopping_;
    const bool head = req.method() == bhttp::verb::head;
    const bool read_method = head || req.method() == bhttp::verb::get;
    auto send = [&](Reply r) -> awaitable<bool> {
      out.status = r.status;
      out.bytes = head ? 0 : r.body.size();
      // A request with a body we did not read cannot keep the connection.
      bool has_body = req.has_content_length() || req.chunked();
      co_return co_await Write(stream, r, head, keep_alive && !has_body);
    };

    Endpoint ep;
    auto route = ParseTarget(std::string(req.target()), &ep);
    if (!route.ok()) co_return co_await send(Error(route.status(), ep));

    if (route->kind == RouteKind::kHealth)
      co_return co_await send(MakeReply(200, "text/plain", "ok\n"));
    if (route->kind == RouteKind::kMetrics) {
      for (auto* u : upstreams_.All()) {
        auto rl = u->client().rate_limit();
        if (rl.remaining >= 0) metrics_.SetRateLimitRemaining(u->name(), rl.remaining);
      }
      co_return co_await send(MakeReply(200, "text/plain; version=0.0.4", metrics_.Render()));
    }
    if (!read_method || route->kind == RouteKind::kUpload) {
      Reply r =
          MakeReply(405, "application/json",
                    ErrorBody("UNSUPPORTED", "this registry is a read-only pull-through cache"));
      r.headers.push_back({"Allow", "GET, HEAD"});
      co_return co_await send(r);
    }
    if (route->kind == RouteKind::kBase)
      co_return co_await send(MakeReply(200, "application/json", "{}"));

    auto choice = ChooseUpstream(
        *route,
        [this](const std::string& n) {
          auto* u = upstreams_.Find(n);
          return u ? u->name() : std::string();
        },
        upstreams_.Default()->name(),
        [this](const std::string& n) {
          auto* u = upstreams_.Find(n);
          return u && u->IsDockerHub();
        });
    if (!choice.ok()) co_return co_await send(Error(choice.status(), Endpoint::kOther));
    cache::Upstream* up = upstreams_.Find(choice->upstream);
    out.upstream = up->name();
    Headers common;
    if (!choice->ns.empty()) common.push_back({"OCI-Namespace", choice->ns});
    const std::string repo = choice->repository;

    switch (route->kind) {
      case RouteKind::kManifest: {
        std::string ref = route->reference;
        auto work = [this, up, &repo, &ref, head] {
          return cache_.GetManifest(*up, repo, ref, head);
        };
        auto m = std::move(*co_await Offload(work));
        if (!m.ok()) {
          metrics_.Request("manifest", "error");
          Reply r = Error(m.status(), Endpoint::kManifest);
          r.headers.insert(r.headers.end(), common.begin(), common.end());
          co_return co_await send(r);
        }
        metrics_.Request("manifest", m->result);
        out.cache = m->result;
        if (!AcceptsMediaType(req, m->media_type)) {
          co_return co_await send(
              Error(NotFound("manifest is " + m->media_type + ", which the client does not accept"),
                    Endpoint::kManifest));
        }
        Reply r;
        r.headers = common;
        r.headers.push_back({"Content-Type", m->media_type});
        r.headers.push_back({"Docker-Content-Digest", m->digest.str()});
        r.headers.push_back({"ETag", "\"" + m->digest.str() + "\""});
        if (!m->warning.empty()) r.headers.push_back({"Warning", m->warning});
        r.head_length = m->size;
        r.body = std::move(m->bytes);
        metrics_.bytes_served += head ? 0 : r.body.size();
        co_return co_await send(std::move(r));
      }
      case RouteKind::kBlob:
        co_return co_await ServeBlob(stream, req, *up, repo, route->reference, common, keep_alive,
                                     head, out);
      case RouteKind::kTags: {
        std::string query = route->raw_query.empty() ? "" : "?" + route->raw_query;
        auto work = [this, up, &repo, &query] { return cache_.Tags(*up, repo, query); };
        auto t = std::move(*co_await Offload(work));
        if (!t.ok()) co_return co_await send(Error(t.status(), Endpoint::kTags));
        Reply r;
        r.status = static_cast<unsigned>(t->status);
        r.headers = common;
        r.headers.push_back(
            {"Content-Type", t->content_type.empty() ? "application/json" : t->content_type});
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
        co_return co_await send(std::move(r));
      }
      case RouteKind::kReferrers: {
        auto d = oci::Digest::Parse(route->reference).value();
        std::string query = route->raw_query.empty() ? "" : "?" + route->raw_query;
        auto work = [this, up, &repo, &d, &query] { return cache_.Referrers(*up, repo, d, query); };
        auto t = std::move(*co_await Offload(work));
        if (!t.ok()) co_return co_await send(Error(t.status(), Endpoint::kReferrers));
        Reply r;
        r.status = static_cast<unsigned>(t->status);
        r.headers = common;
        r.headers.push_back({"Content-Type", t->content_type.empty() ? std::string(oci::kOciIndex)
                                                                     : t->content_type});
        r.body = std::move(t->body);
        co_return co_await send(std::move(r));
      }
      default:
        co_return co_await send(Error(NotFound("no such endpoint"), Endpoint::kOther));
    }
  }

  awaitable<bool> ServeBlob(beast::tcp_stream& stream, bhttp::request<bhttp::empty_body>& req,
                            cache::Upstream& up, const std::string& repo, const std::string& ref,
                            const Headers& common, bool keep_alive, bool head, Outcome& out) {
    auto digest = oci::Digest::Parse(ref).value();
    auto work = [this, &up, &repo, &digest, head] {
      return cache_.OpenBlob(up, repo, digest, head);
    };
    auto b = std::move(*co_await Offload(work));
    if (!b.ok()) {
      metrics_.Request("blob", "error");
      Reply r = Error(b.status(), Endpoint::kBlob);
      r.headers.insert(r.headers.end(), common.begin(), common.end());
      out.status = r.status;
      co_return co_await Write(stream, r, head, keep_alive);
    }
    metrics_.Request("blob", b->result);
    out.cache = b->result;
    struct FdCloser {
      int fd;
      ~FdCloser() {
        if (fd >= 0) ::close(fd);
      }
    } closer{b->fd};

    ByteRange range = head ? ByteRange{ByteRange::kFull, 0, b->size}
                           : ParseRange(std::string(req[bhttp::field::range]), b->size);
    bhttp::response<bhttp::empty_body> res;
    res.version(11);
    res.set("Docker-Distribution-API-Version", "registry/2.0");
    for (const auto& [k, v] : common) res.set(k, v);
    res.set(bhttp::field::content_type, "application/octet-stream");
    res.set("Docker-Content-Digest", digest.str());
    res.set(bhttp::field::etag, "\"" + digest.str() + "\"");
    res.set(bhttp::field::accept_ranges, "bytes");
    res.keep_alive(keep_alive);
    if (range.kind == ByteRange::kUnsatisfiable) {
      res.result(bhttp::status::range_not_satisfiable);
      res.set(bhttp::field::content_range, "bytes */" + std::to_string(b->size));
      res.content_length(0);
      out.status = 416;
      auto [ec, n] = co_await bhttp::async_write(stream, res, kTuple);
      co_return !ec && keep_alive;
    }
    if (range.kind == ByteRange::kPartial) {
      res.result(bhttp::status::partial_content);
      res.set(bhttp::field::content_range, "bytes " + std::to_string(range.start) + "-" +
                                               std::to_string(range.start + range.length - 1) +
                                               "/" + std::to_string(b->size));
    } else {
      res.result(bhttp::status::ok);
    }
    res.content_length(range.length);
    out.status = res.result_int();
    auto [ec, n] = co_await bhttp::async_write(stream, res, kTuple);
    if (ec || head) co_return !ec && keep_alive;

    Status sent;
    if (b->fill) {
      metrics_.fill_waiters++;
      sent = co_await SendFromFill(stream, *b->fill, range.start, range.length, out);
      metrics_.fill_waiters--;
    } else {
      sent = co_await SendFile(stream, b->fd, range.start, range.length, out);
    }
    // A body cut short (fill failed, client gone) leaves the connection unusable: close it.
    co_return sent.ok() && keep_alive;
  }

  // Waits until the socket can take more bytes, or gives up after the idle timeout.
  awaitable<bool> WaitWritable(beast::tcp_stream& stream) {
    asio::steady_timer timer(stream.get_executor(), options_.idle_timeout);
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
        metrics_.bytes_served += static_cast<uint64_t>(n);
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

  awaitable<Status> SendFromFill(beast::tcp_stream& stream, cache::Fill& fill, uint64_t offset,
                                 uint64_t length, Outcome& out) {
    const uint64_t end = offset + length;
    auto ex = stream.get_executor();
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
      auto timer = std::make_shared<asio::steady_timer>(ex, std::chrono::seconds(5));
      fill.WaitForChange(state.readable,
                         [timer, ex] { asio::post(ex, [timer] { timer->cancel(); }); });
      co_await timer->async_wait(kTuple);
    }
    co_return Status::Ok();
  }

  ServerOptions options_;
  cache::PullThroughCache& cache_;
  cache::UpstreamSet& upstreams_;
  cache::Metrics& metrics_;
  asio::io_context ioc_;
  tcp::acceptor acceptor_;
  asio::signal_set signals_;
  asio::thread_pool workers_;
  uint16_t port_ = 0;
  std::atomic<bool> stopping_{false};
  std::chrono::steady_clock::time_point deadline_;
  std::mutex sessions_mu_;
  std::set<std::shared_ptr<SessionState>> sessions_;
};

void RaiseFileLimit() {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
}

}  // namespace

Result<std::unique_ptr<Server>> CreateServer(ServerOptions options, cache::PullThroughCache& cache,
                                             cache::UpstreamSet& upstreams,
                                             cache::Metrics& metrics) {
  RaiseFileLimit();
  auto server = std::make_unique<ServerImpl>(std::move(options), cache, upstreams, metrics);
  RC_RETURN_IF_ERROR(server->Bind());
  return std::unique_ptr<Server>(std::move(server));
}

}  // namespace regcache::http

// HTTP transport for talking to registries, on libcurl. One request at a time per call; safe to
// call from many threads (easy handles are pooled so connections are reused across requests).
// Redirects are NOT followed here: the registry client follows them itself so it can decide what
// credentials go to which host.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "base/status.h"

namespace regcache::upstream {

class HttpHeaders {
 public:
  void Add(std::string name, std::string value);
  void Clear() { entries_.clear(); }
  // First value of a header, case-insensitive; empty when absent.
  std::string Get(std::string_view name) const;
  bool Has(std::string_view name) const;
  // All values of a header (WWW-Authenticate may repeat).
  std::vector<std::string> GetAll(std::string_view name) const;
  const std::vector<std::pair<std::string, std::string>>& entries() const { return entries_; }

 private:
  std::vector<std::pair<std::string, std::string>> entries_;
};

// Supplies a request body in pieces: returns bytes written into buf (0 = end), or an error that
// aborts the request.
using BodyReader = std::function<Result<size_t>(char* buf, size_t max)>;
// Receives a 2xx response body in pieces; returning a non-ok Status aborts the transfer and
// Perform returns that Status.
using BodySink = std::function<Status(const char* data, size_t size)>;

struct HttpRequest {
  std::string method = "GET";
  std::string url;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;  // used when reader is empty
  BodyReader reader;
  std::optional<uint64_t> body_size;  // required with reader
  bool verify_tls = true;
  // Called once with the status and headers of a 2xx response, before its first body byte;
  // a non-ok Status aborts the transfer.
  std::function<Status(long status, const HttpHeaders& headers)> on_headers;
};

struct HttpResponse {
  long status = 0;
  HttpHeaders headers;
  // Body for non-2xx responses, and for 2xx when no sink was given; capped at max_body_bytes.
  std::string body;
  uint64_t body_bytes = 0;  // bytes received (including those handed to the sink)
};

struct TransportOptions {
  std::string ca_file;  // extra CA bundle, added to the system store
  long connect_timeout_ms = 10000;
  // A peer that has not begun its answer (status line) this long after the request started is
  // given up on: catches a black hole that accepts connections and never answers. 0: no limit.
  long response_timeout_ms = 0;
  // A transfer moving less than 1 byte/s for this long is aborted (catches stalled peers).
  long stall_timeout_s = 30;
  size_t max_body_bytes = 8 * 1024 * 1024;
  // When set and true, requests are refused (kAborted) and transfers in progress abort within
  // about a second: lets a server shut down without waiting out stalled peers.
  std::shared_ptr<const std::atomic<bool>> cancel;
};

class HttpTransport {
 public:
  explicit HttpTransport(TransportOptions options);
  ~HttpTransport();
  HttpTransport(const HttpTransport&) = delete;
  HttpTransport& operator=(const HttpTransport&) = delete;

  // Performs one request. Returns the response for any HTTP status (including 4xx/5xx);
  // returns kUnavailable for connection failures, resets and timeouts, kInvalidArgument for an
  // unusable URL, kAborted when cancelled, or the sink's/reader's own error when one of them
  // aborted.
  // If `sink` is given, 2xx bodies go to it (never buffered); other bodies are buffered.
  Result<HttpResponse> Perform(const HttpRequest& request, const BodySink& sink = nullptr);

  // True for errors the TLS layer raised (used to fall back to plain HTTP on insecure hosts).
  static bool LooksLikeTlsFailure(const Status& status);

 private:
  struct Pool;
  TransportOptions options_;
  std::unique_ptr<Pool> pool_;
};

// Splits "scheme://host[:port]" off a URL ("" when not absolute).
std::string UrlOrigin(std::string_view url);
// Resolves a Location header against the URL it came from.
std::string ResolveUrl(std::string_view base, std::string_view location);

}  // namespace regcache::upstream

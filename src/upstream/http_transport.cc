#include "upstream/http_transport.h"

#include <curl/curl.h>

#include <chrono>
#include <cstring>
#include <mutex>

#include "base/strings.h"

namespace regcache::upstream {
namespace {

std::once_flag g_curl_init;

struct CallState {
  const HttpRequest* request = nullptr;
  const BodySink* sink = nullptr;
  HttpResponse* response = nullptr;
  CURL* curl = nullptr;
  size_t max_body = 0;
  Status abort_status;  // set when sink/reader aborted the transfer
  bool headers_seen = false;
  bool answered = false;  // a status line arrived
  bool timed_out = false;
  bool cancelled = false;
  std::chrono::steady_clock::time_point answer_deadline;
  const std::atomic<bool>* cancel = nullptr;
  size_t inline_offset = 0;
};

// Called by libcurl about once a second even on an idle transfer: the place to enforce the
// deadline for an answer and to notice cancellation.
int OnProgress(void* userp, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
  auto* st = static_cast<CallState*>(userp);
  if (st->cancel && st->cancel->load()) {
    st->cancelled = true;
    return 1;
  }
  if (!st->answered && st->answer_deadline != std::chrono::steady_clock::time_point() &&
      std::chrono::steady_clock::now() > st->answer_deadline) {
    st->timed_out = true;
    return 1;
  }
  return 0;
}

size_t OnHeader(char* data, size_t size, size_t nitems, void* userp) {
  auto* st = static_cast<CallState*>(userp);
  std::string_view line(data, size * nitems);
  if (StartsWith(line, "HTTP/")) {
    // A new status line: 100 Continue or a new response; drop what came before.
    st->answered = true;
    st->response->headers.Clear();
    return size * nitems;
  }
  size_t colon = line.find(':');
  if (colon != std::string_view::npos) {
    st->response->headers.Add(std::string(Trim(line.substr(0, colon))),
                              std::string(Trim(line.substr(colon + 1))));
  }
  return size * nitems;
}

size_t OnBody(char* data, size_t size, size_t nmemb, void* userp) {
  auto* st = static_cast<CallState*>(userp);
  size_t n = size * nmemb;
  long code = 0;
  curl_easy_getinfo(st->curl, CURLINFO_RESPONSE_CODE, &code);
  st->response->body_bytes += n;
  if (code >= 200 && code < 300 && !st->headers_seen && st->request->on_headers) {
    st->headers_seen = true;
    Status s = st->request->on_headers(code, st->response->headers);
    if (!s.ok()) {
      st->abort_status = s;
      return CURL_WRITEFUNC_ERROR;
    }
  }
  if (code >= 200 && code < 300 && st->sink && *st->sink) {
    Status s = (*st->sink)(data, n);
    if (!s.ok()) {
      st->abort_status = s;
      return CURL_WRITEFUNC_ERROR;
    }
    return n;
  }
  if (st->response->body.size() + n > st->max_body) {
    if (code >= 200 && code < 300) {
      st->abort_status =
          Status(Code::kIntegrity, "response body exceeds " + HumanBytes(st->max_body) + " limit");
      return CURL_WRITEFUNC_ERROR;
    }
    return n;  // keep the beginning of an oversized error body
  }
  st->response->body.append(data, n);
  return n;
}

size_t OnRead(char* buf, size_t size, size_t nitems, void* userp) {
  auto* st = static_cast<CallState*>(userp);
  size_t max = size * nitems;
  if (st->request->reader) {
    auto r = st->request->reader(buf, max);
    if (!r.ok()) {
      st->abort_status = r.status();
      return CURL_READFUNC_ABORT;
    }
    return *r;
  }
  const std::string& body = st->request->body;
  size_t n = std::min(max, body.size() - st->inline_offset);
  std::memcpy(buf, body.data() + st->inline_offset, n);
  st->inline_offset += n;
  return n;
}

}  // namespace

void HttpHeaders::Add(std::string name, std::string value) {
  entries_.emplace_back(std::move(name), std::move(value));
}

std::string HttpHeaders::Get(std::string_view name) const {
  for (const auto& [k, v] : entries_) {
    if (EqualsIgnoreCase(k, name)) return v;
  }
  return "";
}

bool HttpHeaders::Has(std::string_view name) const {
  for (const auto& [k, v] : entries_) {
    if (EqualsIgnoreCase(k, name)) return true;
  }
  return false;
}

std::vector<std::string> HttpHeaders::GetAll(std::string_view name) const {
  std::vector<std::string> out;
  for (const auto& [k, v] : entries_) {
    if (EqualsIgnoreCase(k, name)) out.push_back(v);
  }
  return out;
}

struct HttpTransport::Pool {
  std::mutex mu;
  std::vector<CURL*> idle;
  CURLSH* share = nullptr;
  std::mutex share_mu[CURL_LOCK_DATA_LAST];
};

namespace {
void ShareLock(CURL*, curl_lock_data data, curl_lock_access, void* userp) {
  static_cast<std::mutex*>(userp)[data].lock();
}
void ShareUnlock(CURL*, curl_lock_data data, void* userp) {
  static_cast<std::mutex*>(userp)[data].unlock();
}
}  // namespace

HttpTransport::HttpTransport(TransportOptions options)
    : options_(std::move(options)), pool_(std::make_unique<Pool>()) {
  std::call_once(g_curl_init, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
  pool_->share = curl_share_init();
  curl_share_setopt(pool_->share, CURLSHOPT_LOCKFUNC, ShareLock);
  curl_share_setopt(pool_->share, CURLSHOPT_UNLOCKFUNC, ShareUnlock);
  curl_share_setopt(pool_->share, CURLSHOPT_USERDATA, pool_->share_mu);
  curl_share_setopt(pool_->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
  curl_share_setopt(pool_->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
}

HttpTransport::~HttpTransport() {
  for (CURL* c : pool_->idle) curl_easy_cleanup(c);
  curl_share_cleanup(pool_->share);
}

bool HttpTransport::LooksLikeTlsFailure(const Status& status) {
  return status.code() == Code::kUnavailable && status.message().find("[tls]") != std::string::npos;
}

Result<HttpResponse> HttpTransport::Perform(const HttpRequest& request, const BodySink& sink) {
  if (options_.cancel && options_.cancel->load()) {
    return Status(Code::kAborted, request.method + " " + request.url + ": shutting down");
  }
  CURL* curl = nullptr;
  {
    std::lock_guard<std::mutex> lock(pool_->mu);
    if (!pool_->idle.empty()) {
      curl = pool_->idle.back();
      pool_->idle.pop_back();
    }
  }
  if (!curl) curl = curl_easy_init();
  if (!curl) return Internal("curl_easy_init failed");
  curl_easy_reset(curl);

  HttpResponse response;
  CallState st;
  st.request = &request;
  st.sink = &sink;
  st.response = &response;
  st.curl = curl;
  st.max_body = options_.max_body_bytes;
  st.cancel = options_.cancel.get();
  if (options_.response_timeout_ms > 0) {
    st.answer_deadline = std::chrono::steady_clock::now() +
                         std::chrono::milliseconds(options_.response_timeout_ms);
  }

  char errbuf[CURL_ERROR_SIZE] = {0};
  curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, errbuf);
  curl_easy_setopt(curl, CURLOPT_URL, request.url.c_str());
  curl_easy_setopt(curl, CURLOPT_SHARE, pool_->share);
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 0L);
  curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, options_.connect_timeout_ms);
  curl_easy_setopt(curl, CURLOPT_LOW_SPEED_LIMIT, 1L);
  curl_easy_setopt(curl, CURLOPT_LOW_SPEED_TIME, options_.stall_timeout_s);
  curl_easy_setopt(curl, CURLOPT_USERAGENT, "regcache/0.1");
  curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, OnHeader);
  curl_easy_setopt(curl, CURLOPT_HEADERDATA, &st);
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, OnBody);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &st);
  curl_easy_setopt(curl, CURLOPT_BUFFERSIZE, 128L * 1024);
  curl_easy_setopt(curl, CURLOPT_NOPROGRESS, 0L);
  curl_easy_setopt(curl, CURLOPT_XFERINFOFUNCTION, OnProgress);
  curl_easy_setopt(curl, CURLOPT_XFERINFODATA, &st);
  if (!request.verify_tls) {
    curl_easy_setopt(curl, CURLOPT_SSL_VERIFYPEER, 0L);
    curl_easy_setopt(curl, CURLOPT_SSL_VERIFYHOST, 0L);
  } else if (!options_.ca_file.empty()) {
    // CAINFO replaces the default bundle file; CAPATH keeps the system store in play.
    curl_easy_setopt(curl, CURLOPT_CAINFO, options_.ca_file.c_str());
    curl_easy_setopt(curl, CURLOPT_CAPATH, "/etc/ssl/certs");
  }

  struct curl_slist* headers = nullptr;
  for (const auto& [k, v] : request.headers) {
    headers = curl_slist_append(headers, (k + ": " + v).c_str());
  }
  headers = curl_slist_append(headers, "Expect:");  // no 100-continue round trip

  const bool has_body = request.reader || !request.body.empty();
  const uint64_t body_size = request.reader ? request.body_size.value_or(0) : request.body.size();
  if (request.method == "HEAD") {
    curl_easy_setopt(curl, CURLOPT_NOBODY, 1L);
  } else if (request.method == "GET") {
    curl_easy_setopt(curl, CURLOPT_HTTPGET, 1L);
  } else if (request.method == "POST" && !has_body) {
    curl_easy_setopt(curl, CURLOPT_POST, 1L);
    curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, 0L);
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, "");
  } else {
    curl_easy_setopt(curl, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(curl, CURLOPT_READFUNCTION, OnRead);
    curl_easy_setopt(curl, CURLOPT_READDATA, &st);
    curl_easy_setopt(curl, CURLOPT_INFILESIZE_LARGE, static_cast<curl_off_t>(body_size));
    if (request.method != "PUT") {
      curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, request.method.c_str());
    }
  }
  if (request.method == "DELETE") curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, "DELETE");
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);

  CURLcode rc = curl_easy_perform(curl);
  curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &response.status);
  curl_slist_free_all(headers);
  {
    std::lock_guard<std::mutex> lock(pool_->mu);
    pool_->idle.push_back(curl);
  }

  if (!st.abort_status.ok()) return st.abort_status;
  if (st.cancelled) {
    return Status(Code::kAborted, request.method + " " + request.url + ": shutting down");
  }
  if (st.timed_out) {
    return Unavailable(request.method + " " + request.url + ": no answer within " +
                       std::to_string(options_.response_timeout_ms) + " ms");
  }
  if (rc != CURLE_OK) {
    std::string what = errbuf[0] ? errbuf : curl_easy_strerror(rc);
    if (rc == CURLE_URL_MALFORMAT || rc == CURLE_UNSUPPORTED_PROTOCOL) {
      return InvalidArgument("bad URL " + request.url + ": " + what);
    }
    bool tls = rc == CURLE_SSL_CONNECT_ERROR || rc == CURLE_PEER_FAILED_VERIFICATION ||
               rc == CURLE_SSL_CERTPROBLEM || rc == CURLE_SSL_CIPHER ||
               rc == CURLE_SSL_CACERT_BADFILE;
    return Unavailable(request.method + " " + request.url + ": " + what + (tls ? " [tls]" : ""));
  }
  return response;
}

std::string UrlOrigin(std::string_view url) {
  size_t scheme = url.find("://");
  if (scheme == std::string_view::npos) return "";
  size_t slash = url.find('/', scheme + 3);
  return ToLower(url.substr(0, slash));
}

std::string ResolveUrl(std::string_view base, std::string_view location) {
  if (location.find("://") != std::string_view::npos) return std::string(location);
  std::string origin = UrlOrigin(base);
  if (StartsWith(location, "//")) {
    return std::string(base.substr(0, base.find("://") + 1)) + std::string(location);
  }
  if (StartsWith(location, "/")) return origin + std::string(location);
  std::string b(base);
  size_t q = b.find('?');
  if (q != std::string::npos) b.resize(q);
  size_t last = b.rfind('/');
  return b.substr(0, last + 1) + std::string(location);
}

}  // namespace regcache::upstream

// One listing of a repository's tags, page by page: the bounds and Link rules of
// RegistryClient::ListTags, apart from HTTP so that they can be tested without a registry.
#pragma once

#include <chrono>
#include <cstdint>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"

namespace regcache::upstream {

// Bounds on one listing. A registry chooses how many pages it sends and what their Links say: a
// Link loop grew sync's memory to 3.4 GB in 30 s, and 10,000 pages still allowed tens of GB. Each
// bound is far above the tag list of any repository a sync is meant for, and reaching one is an
// error naming it, never a silently shorter list (a sync would then miss tags without a word).
//
// Pages: the bound the client always had; at n=1000 (or a registry's own cap of 100 per page)
// it allows 10,000,000 (1,000,000) tags.
inline constexpr size_t kMaxTagListPages = 10000;
// Bytes of page bodies, plus the Link targets kept to tell a loop: bounds the memory a listing
// holds (pages are parsed as a stream, so a page costs its bytes and its tags, no document tree).
// At this bound, a listing of 100-character tags peaked at 125 MiB resident (test_sync_hostile).
inline constexpr uint64_t kMaxTagListBytes = 64ull << 20;
// Entries kept: a page of 64 MiB can hold 16 million one-character entries, each a string of its
// own; this bounds what they cost (about 32 MB of string objects at the bound).
inline constexpr size_t kMaxListedTags = 1000000;
// The whole listing, checked between pages and as bytes arrive: a registry trickling a page at
// a byte a second passes every stall timeout, and each page restarting the clock would not end.
inline constexpr std::chrono::minutes kTagListTimeout{10};

struct TagList {
  std::vector<std::string> tags;  // as the registry listed them: not checked as tags
  // Empty, or why the listing ended before the registry said it was done: a Link back to a page
  // already read (a loop). `tags` then holds what the pages before said.
  std::string stopped;
};

// The target of the first `rel="next"` among the values of a response's Link headers
// (RFC 8288: `<uri>; rel="next"`, several link-values per header, rel a list of types); "" when
// there is none.
std::string NextLinkTarget(const std::vector<std::string>& link_headers);

class TagListing {
 public:
  using Clock = std::chrono::steady_clock;

  // `what` names the repository in messages ("ghcr.io/org/app"); `origin` is the registry's
  // ("https://ghcr.io"), the only one whose pages are read; `start` starts kTagListTimeout.
  TagListing(std::string what, std::string origin, const std::string& repo,
             Clock::time_point start);

  // The path of the page to read next, below the origin; "" when the listing is done.
  const std::string& next_page() const { return next_page_; }

  // A piece of the current page's body arrived at `now`. Kept, unless it passes the bytes bound
  // or the listing's time is up: kUnavailable naming the bound.
  Status Receive(std::string_view data, Clock::time_point now);
  // The current page is answered again from its start (a retry): what was kept of it goes.
  void RestartPage();
  // The current page is complete, with the values of its Link headers. Adds its tags; then
  // next_page() is the page its `rel="next"` Link names, resolved against this one, or "" (no
  // such Link, or one back to a page already read: the same `last`, or the same URL without one;
  // stopped() says so). kUnavailable when the body is not a JSON object, a bound is passed, or the
  // Link leaves the origin: another origin is never asked (a page cannot send the client, and
  // its credentials' scope, to a host of its choosing).
  Status EndPage(const std::vector<std::string>& link_headers, Clock::time_point now);

  // The tags listed; call once, when next_page() is "".
  TagList Take() &&;

 private:
  Status Bound(const std::string& what) const;
  Status CheckTime(Clock::time_point now) const;

  const std::string what_;
  const std::string origin_;
  const Clock::time_point deadline_;
  std::string next_page_;
  std::string page_;  // body of the page being read
  size_t pages_ = 0;
  uint64_t bytes_ = 0;
  std::set<std::string> seen_;  // `last` values (or URLs) of the pages asked for
  TagList list_;
};

}  // namespace regcache::upstream

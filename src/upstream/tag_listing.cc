#include "upstream/tag_listing.h"

#include <nlohmann/json.hpp>

#include "base/strings.h"
#include "upstream/http_transport.h"

namespace regcache::upstream {
namespace {

// Collects the strings of the top-level object's "tags" array as the parser meets them, so a
// page costs its tags and not a document tree (for a page of short entries about 17 times the
// page's size). Anything else in the page is skipped, and so are entries of "tags" that are not
// strings and a "tags" that is not an array (distribution sends `"tags": null` for none).
class TagsCollector : public nlohmann::json_sax<nlohmann::json> {
 public:
  explicit TagsCollector(std::vector<std::string>& tags) : tags_(tags) {}

  bool too_many() const { return too_many_; }
  bool not_an_object() const { return not_an_object_; }

  bool null() override { return First(false); }
  bool boolean(bool) override { return First(false); }
  bool number_integer(number_integer_t) override { return First(false); }
  bool number_unsigned(number_unsigned_t) override { return First(false); }
  bool number_float(number_float_t, const string_t&) override { return First(false); }
  bool binary(binary_t&) override { return First(false); }
  bool string(string_t& s) override {
    if (!First(false)) return false;
    if (depth_ != 2 || !in_tags_) return true;
    if (tags_.size() >= kMaxListedTags) {
      too_many_ = true;
      return false;
    }
    tags_.push_back(std::move(s));
    return true;
  }
  bool start_object(std::size_t) override {
    if (!First(true)) return false;
    ++depth_;
    return true;
  }
  bool key(string_t& k) override {
    tags_key_ = depth_ == 1 && k == "tags";
    return true;
  }
  bool end_object() override {
    --depth_;
    return true;
  }
  bool start_array(std::size_t) override {
    if (!First(false)) return false;
    if (++depth_ == 2) in_tags_ = tags_key_;
    return true;
  }
  bool end_array() override {
    if (depth_-- == 2) in_tags_ = false;
    return true;
  }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception&) override {
    return false;
  }

 private:
  // The document's first value must be an object; `is_object` says whether this one is.
  bool First(bool is_object) {
    if (started_) return true;
    started_ = true;
    not_an_object_ = !is_object;
    return is_object;
  }

  std::vector<std::string>& tags_;
  int depth_ = 0;
  bool started_ = false;
  bool tags_key_ = false;  // the last key of the top-level object was "tags"
  bool in_tags_ = false;   // inside that key's array (depth 2)
  bool too_many_ = false;
  bool not_an_object_ = false;
};

// Whether a Link's parameters (what follows its `<uri>`) hold rel="next" (a rel is a
// space-separated list of relation types, compared without case).
bool RelIsNext(std::string_view params) {
  const std::string lower = ToLower(params);
  for (size_t at = lower.find("rel"); at != std::string::npos; at = lower.find("rel", at + 3)) {
    size_t i = at + 3;
    if (at > 0 && lower[at - 1] != ';' && lower[at - 1] != ' ') continue;  // "prel=…"
    while (i < lower.size() && lower[i] == ' ') ++i;
    if (i >= lower.size() || lower[i] != '=') continue;
    ++i;
    while (i < lower.size() && lower[i] == ' ') ++i;
    std::string_view value = std::string_view(lower).substr(i);
    if (!value.empty() && value[0] == '"') {
      value = value.substr(1, value.find('"', 1) - 1);
    } else {
      value = value.substr(0, value.find_first_of("; ,"));
    }
    for (const auto& type : Split(value, ' ')) {
      if (type == "next") return true;
    }
  }
  return false;
}

// The value of query parameter `name` in `path` (as written, not decoded); nullopt if absent.
std::optional<std::string> QueryParam(std::string_view path, std::string_view name) {
  size_t q = path.find('?');
  if (q == std::string_view::npos) return std::nullopt;
  for (const auto& part : Split(path.substr(q + 1), '&')) {
    if (part.size() > name.size() && StartsWith(part, name) && part[name.size()] == '=') {
      return part.substr(name.size() + 1);
    }
  }
  return std::nullopt;
}

// What a registry sent, quoted in a message.
std::string Shown(std::string_view s) { return PrintablePrefix(s, 100); }

}  // namespace

std::string NextLinkTarget(const std::vector<std::string>& link_headers) {
  for (const auto& header : link_headers) {
    for (size_t lt = header.find('<'); lt != std::string::npos;) {
      const size_t gt = header.find('>', lt);
      if (gt == std::string::npos) break;
      const size_t next = header.find('<', gt);  // the next link-value, if any
      if (RelIsNext(std::string_view(header).substr(gt + 1, next - gt - 1))) {
        return header.substr(lt + 1, gt - lt - 1);
      }
      lt = next;
    }
  }
  return "";
}

TagListing::TagListing(std::string what, std::string origin, const std::string& repo,
                       Clock::time_point start)
    : what_(std::move(what)),
      origin_(ToLower(origin)),
      deadline_(start + kTagListTimeout),
      next_page_("/v2/" + repo + "/tags/list?n=1000") {
  seen_.insert(next_page_);
}

Status TagListing::Bound(const std::string& what) const {
  return Unavailable("listing tags of " + what_ + ": " + what + " (the bound for one listing; " +
                     std::to_string(list_.tags.size()) + " entries in " + std::to_string(pages_) +
                     " pages read)");
}

Status TagListing::CheckTime(Clock::time_point now) const {
  if (now < deadline_) return Status::Ok();
  return Bound("not done after " + std::to_string(kTagListTimeout.count()) + " minutes");
}

Status TagListing::Receive(std::string_view data, Clock::time_point now) {
  RC_RETURN_IF_ERROR(CheckTime(now));
  if (bytes_ + data.size() > kMaxTagListBytes) {
    return Bound("more than " + HumanBytes(kMaxTagListBytes) + " of pages");
  }
  bytes_ += data.size();
  page_.append(data);
  return Status::Ok();
}

void TagListing::RestartPage() { page_.clear(); }

Status TagListing::EndPage(const std::vector<std::string>& link_headers, Clock::time_point now) {
  RC_RETURN_IF_ERROR(CheckTime(now));
  const std::string page = std::move(next_page_);
  next_page_.clear();
  ++pages_;
  TagsCollector collector(list_.tags);
  const bool parsed = nlohmann::json::sax_parse(page_, &collector);
  std::string().swap(page_);
  if (collector.too_many()) {
    return Bound("more than " + std::to_string(kMaxListedTags) + " entries");
  }
  if (!parsed || collector.not_an_object()) {
    return Unavailable("tag list of " + what_ + " is not a JSON object");
  }

  std::string link = NextLinkTarget(link_headers);
  if (link.empty()) return Status::Ok();
  // Relative targets resolve against this page (RFC 3986), a bare "?query" keeping its path.
  const std::string here = origin_ + page;
  const std::string target =
      StartsWith(link, "?") ? here.substr(0, here.find('?')) + link : ResolveUrl(here, link);
  if (UrlOrigin(target) != origin_) {
    return Unavailable("tag list of " + what_ + ": its Link leads to another origin, '" +
                       Shown(UrlOrigin(target).empty() ? target : UrlOrigin(target)) +
                       "'; tag lists are read from the registry's own origin (" + origin_ +
                       ") only");
  }
  std::string path = target.substr(origin_.size());
  if (!StartsWith(path, "/")) {
    return Unavailable("tag list of " + what_ + ": its Link '" + Shown(link) + "' names no path");
  }
  // A page asked for before: the registry would answer as it did, Link included.
  std::string key = QueryParam(path, "last").value_or(path);
  if (seen_.count(key)) {
    list_.stopped = "the tag list of " + what_ + " leads back to a page already read (" +
                    (StartsWith(key, "/") ? "'" + Shown(key) + "'" : "last=" + Shown(key)) +
                    "); stopped there, with the " + std::to_string(list_.tags.size()) +
                    " entries listed";
    return Status::Ok();
  }
  if (pages_ >= kMaxTagListPages) {
    return Bound("more than " + std::to_string(kMaxTagListPages) + " pages");
  }
  if (bytes_ + key.size() > kMaxTagListBytes) {
    return Bound("more than " + HumanBytes(kMaxTagListBytes) + " of pages");
  }
  bytes_ += key.size();
  seen_.insert(std::move(key));
  next_page_ = std::move(path);
  return Status::Ok();
}

TagList TagListing::Take() && { return std::move(list_); }

}  // namespace regcache::upstream

#include "copy/sync.h"

#include <re2/re2.h>

#include <atomic>
#include <memory>
#include <set>
#include <sstream>
#include <thread>

#include "base/strings.h"
#include "copy/yaml_config.h"
#include "oci/mirror.h"

namespace regcache::copy {
namespace {

using Seconds = std::chrono::seconds;

// tag_regex is compiled by RE2, not std::regex. RE2 matches in time linear in the tag's length
// (no backtracking, so `(a|a)*b` against a source-chosen tag cannot hang a run), parses and
// compiles without recursion (a deeply nested pattern is an error, not a stack overflow), and
// refuses a pattern whose automaton would need more than max_mem instead of growing. Its syntax
// is Go's regexp's, so patterns from regsync or skopeo sync files carry over; it has no
// back-references or lookaround, which such patterns cannot use either.
//
// A tag is at most 128 characters, so no useful pattern needs a large automaton: 1 MiB holds
// programs of about 48,000 instructions (sixteen `[a-z0-9]{1,1000}` in a row), and RE2 refuses
// any count above 1000 itself. The pattern's length needs no bound of its own: a longer one
// costs linear time to parse and is refused once its program passes max_mem.
constexpr int64_t kTagRegexMaxMem = 1 << 20;

// RE2's error messages quote the rest of the pattern; a long one is cut to keep one line short.
constexpr size_t kMaxRegexErrorLength = 200;

Result<std::unique_ptr<RE2>> CompileTagRegex(const std::string& pattern) {
  RE2::Options options;
  options.set_log_errors(false);  // returned, not printed on stderr by RE2
  options.set_max_mem(kTagRegexMaxMem);
  options.set_never_capture(true);  // only whether a tag matches
  auto re = std::make_unique<RE2>(pattern, options);
  if (re->ok()) return re;
  std::string why = re->error();
  if (why.size() > kMaxRegexErrorLength) why = why.substr(0, kMaxRegexErrorLength) + "…";
  if (re->error_code() == RE2::ErrorPatternTooLarge) {
    why += " (its automaton would need more than " + HumanBytes(kTagRegexMaxMem) + ")";
  }
  return InvalidArgument(why +
                         " (tag_regex is RE2 syntax, as Go's regexp: no back-references or "
                         "lookaround)");
}

Result<std::vector<std::string>> StringList(const YAML::Node& node, const std::string& where) {
  std::vector<std::string> out;
  if (node.IsScalar()) {
    out.push_back(node.as<std::string>());
    return out;
  }
  if (!node.IsSequence()) return InvalidArgument(where + " must be a list of strings");
  for (const auto& n : node) {
    if (!n.IsScalar()) return InvalidArgument(where + " must be a list of strings");
    out.push_back(n.as<std::string>());
  }
  return out;
}

Result<std::vector<oci::Platform>> Platforms(const YAML::Node& node, const std::string& where) {
  RC_ASSIGN_OR_RETURN(auto list, StringList(node, where));
  std::vector<oci::Platform> out;
  for (const auto& p : list) {
    auto parsed = oci::ParsePlatform(p);
    if (!parsed.ok()) return parsed.status().WithContext(where);
    out.push_back(*parsed);
  }
  return out;
}

// The keys naming where an image goes; an image takes exactly one.
struct DestinationKey {
  const char* name;
  std::string SyncImageSpec::*field;
};
constexpr DestinationKey kDestinationKeys[] = {
    {"destination", &SyncImageSpec::destination},
    {"destination_prefix", &SyncImageSpec::destination_prefix},
    {"mirror_prefix", &SyncImageSpec::mirror_prefix},
};

// Reads the destination key of `n` (an image, or `defaults`) into `spec`. A key given here
// replaces whatever destination `spec` inherited from the defaults; two keys here are an error.
Status ReadDestination(const YAML::Node& n, const std::string& where, SyncImageSpec& spec) {
  const DestinationKey* given = nullptr;
  for (const auto& key : kDestinationKeys) {
    if (!n[key.name]) continue;
    if (given) {
      return InvalidArgument(where +
                             ": give one of 'destination', 'destination_prefix' or "
                             "'mirror_prefix', not both '" +
                             given->name + "' and '" + key.name + "'");
    }
    given = &key;
  }
  if (!given) return Status::Ok();
  for (const auto& key : kDestinationKeys) (spec.*key.field).clear();
  std::string value = n[given->name].as<std::string>();
  const std::string field = where + "." + given->name;
  if (given->field == &SyncImageSpec::destination) {
    auto d = oci::ParseReference(value, false);
    if (!d.ok()) return d.status().WithContext(field);
  } else if (given->field == &SyncImageSpec::mirror_prefix) {
    auto p = ParseMirrorPrefix(value);
    if (!p.ok()) return p.status().WithContext(field);
  }
  spec.*given->field = std::move(value);
  return Status::Ok();
}

// The destination key's value as the user wrote it (for failures before a reference exists).
const std::string& DestinationText(const SyncImageSpec& spec) {
  for (const auto& key : kDestinationKeys) {
    if (!(spec.*key.field).empty()) return spec.*key.field;
  }
  return spec.destination;
}

Result<SyncConfig> ParseNode(const YAML::Node& root) {
  SyncConfig c;
  if (!root.IsMap()) return InvalidArgument("sync file must be a YAML mapping");
  RC_RETURN_IF_ERROR(CheckYamlKeys(
      root, {"parallel", "blob_parallel", "registries", "images", "ratelimit", "defaults"},
      "sync file"));
  if (root["parallel"]) c.parallel = root["parallel"].as<int>();
  if (root["blob_parallel"]) c.blob_parallel = root["blob_parallel"].as<int>();
  if (c.parallel < 1 || c.parallel > 64) return InvalidArgument("parallel must be 1..64");
  if (c.blob_parallel < 1 || c.blob_parallel > 64)
    return InvalidArgument("blob_parallel must be 1..64");

  SyncImageSpec defaults;
  if (auto d = root["defaults"]) {
    RC_RETURN_IF_ERROR(CheckYamlKeys(
        d, {"destination_prefix", "mirror_prefix", "platforms", "check_upstream"}, "defaults"));
    RC_RETURN_IF_ERROR(ReadDestination(d, "defaults", defaults));
    if (d["platforms"]) {
      RC_ASSIGN_OR_RETURN(defaults.platforms, Platforms(d["platforms"], "defaults.platforms"));
    }
    if (d["check_upstream"]) defaults.check_upstream = d["check_upstream"].as<bool>();
  }

  if (auto r = root["ratelimit"]) {
    RC_RETURN_IF_ERROR(
        CheckYamlKeys(r, {"min_remaining", "action", "wait_interval", "max_wait"}, "ratelimit"));
    if (r["min_remaining"]) c.ratelimit.min_remaining = r["min_remaining"].as<int64_t>();
    if (r["action"]) {
      std::string a = r["action"].as<std::string>();
      if (a != "wait" && a != "stop")
        return InvalidArgument("ratelimit.action must be 'wait' or 'stop'");
      c.ratelimit.wait = a == "wait";
    }
    if (r["wait_interval"]) {
      RC_ASSIGN_OR_RETURN(c.ratelimit.wait_interval,
                          ParseDuration(r["wait_interval"].as<std::string>()));
    }
    if (r["max_wait"]) {
      RC_ASSIGN_OR_RETURN(c.ratelimit.max_wait, ParseDuration(r["max_wait"].as<std::string>()));
    }
  }

  if (auto regs = root["registries"]) {
    if (!regs.IsMap()) return InvalidArgument("registries must be a mapping of host to settings");
    for (const auto& kv : regs) {
      std::string host = kv.first.as<std::string>();
      std::string where = "registries." + host;
      const YAML::Node& n = kv.second;
      RC_RETURN_IF_ERROR(
          CheckYamlKeys(n, {"username", "password", "password_env", "insecure", "ca_file"}, where));
      RegistrySettings s;
      RC_ASSIGN_OR_RETURN(s.credentials, CredentialsFromYaml(n, where));
      if (n["insecure"]) s.insecure = n["insecure"].as<bool>();
      if (n["ca_file"]) s.ca_file = n["ca_file"].as<std::string>();
      c.registries[oci::NormalizeRegistryHost(host)] = s;
    }
  }

  auto images = root["images"];
  if (!images || !images.IsSequence() || images.size() == 0) {
    return InvalidArgument("sync file needs a non-empty 'images' list");
  }
  for (size_t i = 0; i < images.size(); ++i) {
    const YAML::Node& n = images[i];
    std::string where = "images[" + std::to_string(i) + "]";
    RC_RETURN_IF_ERROR(
        CheckYamlKeys(n,
                      {"source", "tags", "tag_regex", "destination", "destination_prefix",
                       "mirror_prefix", "platforms", "check_upstream"},
                      where));
    SyncImageSpec spec = defaults;
    if (!n["source"]) return InvalidArgument(where + ": missing 'source'");
    spec.source = n["source"].as<std::string>();
    auto src = oci::ParseReference(spec.source, false);
    if (!src.ok()) return src.status().WithContext(where + ".source");
    if (n["tags"]) {
      RC_ASSIGN_OR_RETURN(spec.tags, StringList(n["tags"], where + ".tags"));
      for (const auto& t : spec.tags) {
        if (!oci::IsValidTag(t)) return InvalidArgument(where + ".tags: invalid tag '" + t + "'");
      }
    }
    if (n["tag_regex"]) {
      spec.tag_regex = n["tag_regex"].as<std::string>();
      auto re = CompileTagRegex(spec.tag_regex);
      if (!re.ok()) return re.status().WithContext(where + ".tag_regex");
    }
    if (!spec.tags.empty() && !spec.tag_regex.empty()) {
      return InvalidArgument(where + ": give 'tags' or 'tag_regex', not both");
    }
    if ((!spec.tags.empty() || !spec.tag_regex.empty()) && (!src->tag.empty() || src->digest)) {
      return InvalidArgument(where + ": source has a tag or digest; do not also give tags");
    }
    RC_RETURN_IF_ERROR(ReadDestination(n, where, spec));
    if (DestinationText(spec).empty()) {
      return InvalidArgument(where +
                             ": needs 'destination', 'destination_prefix' or 'mirror_prefix' "
                             "(here or in defaults)");
    }
    if (n["platforms"]) {
      RC_ASSIGN_OR_RETURN(spec.platforms, Platforms(n["platforms"], where + ".platforms"));
    }
    if (n["check_upstream"]) spec.check_upstream = n["check_upstream"].as<bool>();
    c.images.push_back(std::move(spec));
  }
  return c;
}

// A registry may list anything (a 50,000-character "tag", a name with a slash): no such entry
// names an image sync could copy, and none reaches the regex.
std::vector<std::string> ValidTags(std::vector<std::string> listed, const std::string& source,
                                   const std::function<void(const std::string&)>& log) {
  size_t dropped = 0;
  std::string example;
  std::erase_if(listed, [&](const std::string& tag) {
    if (oci::IsValidTag(tag)) return false;
    if (dropped++ == 0) example = tag;
    return true;
  });
  if (dropped == 0) return listed;
  constexpr size_t kShown = 40;
  std::string shown = "'" + PrintablePrefix(example, kShown) + "'";
  if (example.size() > kShown) shown += " (" + std::to_string(example.size()) + " characters)";
  log("ignoring " + std::to_string(dropped) + " of " + std::to_string(listed.size() + dropped) +
      " entries in the tag list of " + source +
      " that are not valid tags (at most 128 of [A-Za-z0-9_.-], not starting with '.' or '-'), "
      "e.g. " +
      shown);
  return listed;
}

}  // namespace

Result<MirrorPrefix> ParseMirrorPrefix(std::string_view text) {
  std::string what = "mirror prefix '";
  what.append(text).push_back('\'');
  if (text.find("://") != std::string_view::npos) {
    return InvalidArgument(what + ": give HOST[:PORT]/PATH, without a URL scheme");
  }
  while (!text.empty() && text.back() == '/') text.remove_suffix(1);
  const size_t slash = text.find('/');
  const std::string_view host = text.substr(0, slash);
  const std::string_view path =
      slash == std::string_view::npos ? std::string_view() : text.substr(slash + 1);
  // A host the way image references tell one: a '.', a port, or localhost. Without it "cache"
  // would be read as a Docker Hub repository.
  if (host.find_first_of(".:") == std::string_view::npos && host != "localhost") {
    return InvalidArgument(what +
                           ": must start with a registry host, as in HOST[:PORT]/PATH "
                           "(registry.example.com/cache, 127.0.0.1:5001/cache)");
  }
  if (!oci::IsValidRegistryHost(host)) {
    return InvalidArgument(what + ": invalid registry host '" + std::string(host) + "'");
  }
  if (path.find_first_of(":@") != std::string_view::npos) {
    return InvalidArgument(what + ": takes no tag or digest (the source's are used)");
  }
  if (!path.empty() && !oci::IsValidRepository(path)) {
    return InvalidArgument(what + ": invalid path '" + std::string(path) +
                           "' (components of [a-z0-9] separated by '.', '_', '__' or '-', "
                           "joined by '/')");
  }
  return MirrorPrefix{oci::NormalizeRegistryHost(host), std::string(path)};
}

Result<oci::Reference> MirrorDestination(const MirrorPrefix& prefix, const oci::Reference& source) {
  oci::Reference dst;
  dst.registry = prefix.registry;
  dst.repository = oci::MirrorRepository(prefix.path, source.registry, source.repository);
  if (source.tag.empty()) {
    dst.digest = source.digest;
  } else {
    dst.tag = source.tag;
  }
  if (dst.Name().size() > oci::kMaxNameLength) {
    // Appended, not "literal" + Name(): GCC 12 -O2 warns falsely (-Wrestrict, PR 105651).
    std::string message = "mirror destination '";
    message.append(dst.Name()).append("' is longer than ");
    message.append(std::to_string(oci::kMaxNameLength)).append(" characters; shorten the prefix");
    return InvalidArgument(std::move(message));
  }
  // Otherwise checked as any reference is.
  auto checked = oci::ParseReference(dst.String(), false);
  if (!checked.ok()) return checked.status().WithContext("mirror destination");
  return checked;
}

Result<SyncConfig> ParseSyncConfig(const std::string& yaml_text) {
  // yaml-cpp reports errors by exception; this is config loading, not a request path, so they
  // are caught here and turned into a Status once.
  try {
    return ParseNode(YAML::Load(yaml_text));
  } catch (const YAML::Exception& e) {
    return InvalidArgument(std::string("sync file: ") + e.what());
  }
}

Result<std::vector<std::string>> MatchingTags(const std::string& tag_regex,
                                              std::vector<std::string> listed,
                                              const std::string& source,
                                              const std::function<void(const std::string&)>& log) {
  RC_ASSIGN_OR_RETURN(std::unique_ptr<RE2> re, CompileTagRegex(tag_regex));
  std::vector<std::string> matching;
  std::set<std::string_view> seen;  // a tag listed twice is one image
  std::vector<std::string> valid = ValidTags(std::move(listed), source, log);
  for (const auto& tag : valid) {
    if (RE2::FullMatch(tag, *re) && seen.insert(tag).second) matching.push_back(tag);
  }
  return matching;
}

SyncRunner::SyncRunner(ClientPool& clients, const SyncConfig& config)
    : clients_(clients), config_(config) {
  for (const auto& [registry, settings] : config_.registries) {
    clients_.Configure(registry, Role::kSource, settings);
    clients_.Configure(registry, Role::kDestination, settings);
  }
}

std::vector<SyncItem> SyncRunner::Expand(std::vector<SyncOutcome>& failures,
                                         const std::function<void(const std::string&)>& log) {
  std::vector<SyncItem> items;
  for (const auto& spec : config_.images) {
    oci::Reference src = oci::ParseReference(spec.source, false).value();
    std::vector<std::string> idents;
    if (!src.tag.empty() || src.digest) {
      idents.push_back(src.Identifier());
    } else if (!spec.tags.empty()) {
      idents = spec.tags;
    } else if (!spec.tag_regex.empty()) {
      auto listed = clients_.Get(src.registry, Role::kSource).ListTags(src.repository);
      if (!listed.ok()) {
        failures.push_back(
            {src.Name() + " (tag_regex)", DestinationText(spec), listed.status(), {}});
        continue;
      }
      if (!listed->stopped.empty()) log(listed->stopped);
      auto matching = MatchingTags(spec.tag_regex, std::move(listed->tags), src.Name(), log);
      if (!matching.ok()) {  // checked at load: not expected
        failures.push_back({src.Name() + " (tag_regex)",
                            DestinationText(spec),
                            matching.status().WithContext("tag_regex"),
                            {}});
        continue;
      }
      idents = std::move(*matching);
      if (idents.empty()) {
        failures.push_back({src.Name() + " (tag_regex " + spec.tag_regex + ")",
                            "",
                            NotFound("no tag of " + src.Name() + " matches " + spec.tag_regex),
                            {}});
        continue;
      }
    } else {
      idents.push_back("latest");
    }
    for (const auto& ident : idents) {
      SyncItem item;
      item.spec = &spec;
      item.source = src;
      if (ident.find(':') != std::string::npos) {
        item.source.digest = oci::Digest::Parse(ident).value();
      } else {
        item.source.tag = ident;
      }
      std::string tag = item.source.tag.empty() ? "" : item.source.tag;
      std::string dest_text;
      Result<oci::Reference> dst = InvalidArgument("no destination");  // set by each branch
      if (!spec.mirror_prefix.empty()) {
        dest_text = spec.mirror_prefix;
        dst = MirrorDestination(ParseMirrorPrefix(spec.mirror_prefix).value(), item.source);
      } else if (!spec.destination.empty()) {
        auto d = oci::ParseReference(spec.destination, false).value();
        if ((!d.tag.empty() || d.digest) && idents.size() > 1) {
          failures.push_back({item.source.String(),
                              spec.destination,
                              InvalidArgument("destination has a tag but the source has several"),
                              {}});
          continue;
        }
        dest_text = spec.destination;
        if (d.tag.empty() && !d.digest) dest_text += tag.empty() ? "" : ":" + tag;
        dst = oci::ParseReference(dest_text, false);
      } else {
        dest_text = spec.destination_prefix + "/" + src.repository + (tag.empty() ? "" : ":" + tag);
        dst = oci::ParseReference(dest_text, false);
      }
      if (!dst.ok()) {
        failures.push_back({item.source.String(), dest_text, dst.status(), {}});
        continue;
      }
      item.destination = *dst;
      if (item.destination.tag.empty() && !item.destination.digest) {
        failures.push_back({item.source.String(),
                            dest_text,
                            InvalidArgument("a source by digest needs a destination tag"),
                            {}});
        continue;
      }
      items.push_back(item);
    }
  }
  return items;
}

Status SyncRunner::GateOnRateLimit(const SyncItem& item,
                                   const std::function<void(const std::string&)>& log) {
  const auto& guard = config_.ratelimit;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopped_) return stop_reason_;
  }
  if (guard.min_remaining < 0) return Status::Ok();
  auto& client = clients_.Get(item.source.registry, Role::kSource);
  auto waited = Seconds(0);
  while (true) {
    auto rl = client.rate_limit();
    if (rl.remaining < 0 || rl.remaining >= guard.min_remaining) return Status::Ok();
    std::string what = item.source.registry + " reports " + std::to_string(rl.remaining) +
                       " pulls remaining (threshold " + std::to_string(guard.min_remaining) + ")";
    if (!guard.wait || waited >= guard.max_wait) {
      Status stop(Code::kRateLimited,
                  "not attempted: " + what +
                      (guard.wait ? "; waited " + std::to_string(waited.count()) + " s" : "") +
                      "; run again later or raise the quota (docker login)");
      std::lock_guard<std::mutex> lock(mu_);
      if (!stopped_) {
        stopped_ = true;
        stop_reason_ = stop;
        log("stopping: " + what);
      }
      return stop_reason_;
    }
    log("waiting " + std::to_string(guard.wait_interval.count()) + " s: " + what);
    std::this_thread::sleep_for(guard.wait_interval);
    waited += guard.wait_interval;
    // A HEAD costs no quota and brings fresh rate-limit headers.
    (void)client.HeadManifest(item.source.repository, item.source.Identifier());
  }
}

std::vector<SyncOutcome> SyncRunner::Run(const std::vector<SyncItem>& items, bool dry_run,
                                         const std::function<void(const std::string&)>& log) {
  std::vector<SyncOutcome> outcomes(items.size());
  std::atomic<size_t> next{0};
  auto worker = [&] {
    while (true) {
      size_t i = next.fetch_add(1);
      if (i >= items.size()) return;
      const SyncItem& item = items[i];
      SyncOutcome& out = outcomes[i];
      out.source = item.source.String();
      out.destination = item.destination.String();
      Status gate = GateOnRateLimit(item, log);
      if (!gate.ok()) {
        out.status = gate;
        continue;
      }
      EnsureOptions options;
      options.check_upstream = item.spec->check_upstream;
      options.platforms = item.spec->platforms;
      options.parallel_blobs = config_.blob_parallel;
      options.dry_run = dry_run;
      Copier copier(clients_.Get(item.source.registry, Role::kSource),
                    clients_.Get(item.destination.registry, Role::kDestination), options);
      auto r = copier.Ensure(item.source, item.destination);
      if (!r.ok()) {
        out.status = r.status();
        log("failed: " + out.source + " -> " + out.destination + ": " + r.status().message());
      } else {
        out.result = *r;
        if (r->copied) log("copied: " + out.source + " -> " + out.destination);
      }
    }
  };
  std::vector<std::thread> threads;
  const size_t n = std::min<size_t>(static_cast<size_t>(config_.parallel), items.size());
  for (size_t i = 1; i < n; ++i) threads.emplace_back(worker);
  if (n > 0) worker();
  for (auto& t : threads) t.join();
  return outcomes;
}

std::string FormatSyncSummary(const std::vector<SyncOutcome>& outcomes, bool dry_run) {
  size_t w_src = 6, w_dst = 11;
  for (const auto& o : outcomes) {
    w_src = std::max(w_src, o.source.size());
    w_dst = std::max(w_dst, o.destination.size());
  }
  std::ostringstream out;
  auto pad = [](const std::string& s, size_t w) { return s + std::string(w - s.size() + 2, ' '); };
  out << pad("SOURCE", w_src) << pad("DESTINATION", w_dst) << "RESULT\n";
  int copied = 0, present = 0, failed = 0, would = 0;
  for (const auto& o : outcomes) {
    std::string result;
    if (!o.status.ok()) {
      ++failed;
      result = "failed: " + o.status.message();
    } else if (o.result.would_copy) {
      ++would;
      result = "would copy (" + o.result.reason + ")";
    } else if (o.result.copied) {
      ++copied;
      result = "copied " + o.result.destination_digest.str().substr(0, 19) + " (" +
               std::to_string(o.result.blobs_copied) + " blobs, " +
               HumanBytes(o.result.bytes_copied) + ")";
    } else {
      ++present;
      result = "present " + o.result.destination_digest.str().substr(0, 19);
    }
    out << pad(o.source, w_src) << pad(o.destination, w_dst) << result << "\n";
  }
  if (dry_run) {
    out << would << " would be copied, " << present << " already present, " << failed
        << " failed\n";
  } else {
    out << copied << " copied, " << present << " already present, " << failed << " failed\n";
  }
  return out.str();
}

}  // namespace regcache::copy

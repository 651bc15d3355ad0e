#include "http/status_page.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <functional>
#include <limits>

#include "base/strings.h"
#include "base/version.h"

namespace regcache::http {
namespace {

using Clock = std::chrono::steady_clock;
using cache::TrafficHistory;

constexpr size_t kFillsShown = 20;
constexpr size_t kPulledShown = 10;
constexpr double kNoValue = std::numeric_limits<double>::quiet_NaN();

// Line colours that stay apart for the common colour-vision deficiencies (Okabe and Ito).
constexpr const char* kPalette[] = {"#0072b2", "#e69f00", "#009e73", "#cc79a7",
                                    "#56b4e9", "#d55e00", "#999933", "#882255"};

std::string Printf(const char* format, double v) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), format, v);
  return buf;
}

std::string Fraction(uint64_t part, uint64_t whole) {
  return whole == 0 ? "" : Printf("%.4f", static_cast<double>(part) / static_cast<double>(whole));
}

// "66.7%" as text, with the exact ratio as the machine-readable value; a dash when nothing was
// counted.
std::string RatioData(uint64_t part, uint64_t whole) {
  if (whole == 0) return "<data value=\"\">&ndash;</data>";
  const double r = static_cast<double>(part) / static_cast<double>(whole);
  return "<data value=\"" + Fraction(part, whole) + "\">" + Printf("%.1f%%", 100 * r) + "</data>";
}

std::string BytesData(uint64_t n) {
  return "<data value=\"" + std::to_string(n) + "\">" + HumanBytes(n) + "</data>";
}

// "1 blob", "3 blobs".
std::string Plural(int64_t n, const std::string& noun) {
  return std::to_string(n) + " " + noun + (n == 1 ? "" : "s");
}

std::string CountData(uint64_t n) {
  return "<data value=\"" + std::to_string(n) + "\">" + std::to_string(n) + "</data>";
}

// "3 d 4 h", "6 h", "12 min 5 s": the two largest units, a zero second one left out.
std::string Duration(int64_t s) {
  const int64_t parts[] = {s / 86400, s % 86400 / 3600, s % 3600 / 60, s % 60};
  const char* units[] = {" d", " h", " min", " s"};
  int first = 0;
  while (first < 3 && parts[first] == 0) ++first;
  std::string out = std::to_string(parts[first]) + units[first];
  if (first < 3 && parts[first + 1] > 0) {
    out += " " + std::to_string(parts[first + 1]) + units[first + 1];
  }
  return out;
}

// ---- charts ---------------------------------------------------------------------------------

struct Series {
  std::string name;
  std::string color;
  bool dashed = false;
  std::vector<std::pair<double, double>> points;  // (seconds before now, value); NaN: no value
};

struct YAxis {
  double max = 1;
  std::vector<double> ticks;
  std::function<std::string(double)> label;
};

// Ticks at a round step in the unit the largest value is best read in (B/s, KiB/s, …).
YAxis RateAxis(double largest) {
  YAxis a;
  double unit = 1;
  while (largest / unit >= 1024 && unit < std::pow(1024.0, 4)) unit *= 1024;
  const double in_unit = std::max(largest / unit, 1.0);
  const double rough = in_unit / 4, magnitude = std::pow(10.0, std::floor(std::log10(rough)));
  double step = magnitude;
  for (double m : {1.0, 2.0, 5.0, 10.0}) {
    step = m * magnitude;
    if (step >= rough) break;
  }
  const double top = std::ceil(in_unit / step) * step;
  for (double v = 0; v <= top + step / 2; v += step) a.ticks.push_back(v * unit);
  a.max = top * unit;
  a.label = [unit](double v) {
    static const char* kUnits[] = {"B/s", "KiB/s", "MiB/s", "GiB/s", "TiB/s"};
    int u = 0;
    for (double x = unit; x >= 1024; x /= 1024) ++u;
    return Printf("%g ", v / unit) + kUnits[u];
  };
  return a;
}

YAxis PercentAxis() {
  YAxis a;
  a.max = 100;
  a.ticks = {0, 25, 50, 75, 100};
  a.label = [](double v) { return Printf("%.0f%%", v); };
  return a;
}

// A coordinate with one decimal (std::to_chars: the charts print thousands of them).
void AppendCoord(std::string& out, double v) {
  char buf[32];
  auto end = std::to_chars(buf, buf + sizeof(buf), v, std::chars_format::fixed, 1).ptr;
  out.append(buf, end);
}

std::string Coord(double v) {
  std::string out;
  AppendCoord(out, v);
  return out;
}

// An SVG line chart of the last hour: x from kHistory ago to now, one path per series (broken
// where a value is missing), a dot with a tooltip on every point of a short series and on the
// last point of each, a legend below. `id` names the chart for the DOM.
std::string LineChart(const std::string& id, const std::string& title,
                      const std::vector<Series>& series, const YAxis& y) {
  constexpr double kW = 720, kH = 220, kLeft = 78, kRight = 14, kTop = 12, kBottom = 30;
  constexpr double kPlotW = kW - kLeft - kRight, kPlotH = kH - kTop - kBottom;
  const double span = static_cast<double>(StatusPage::kHistory.count());
  auto px = [&](double ago) { return kLeft + (1 - std::clamp(ago, 0.0, span) / span) * kPlotW; };
  auto py = [&](double v) { return kTop + (1 - std::clamp(v / y.max, 0.0, 1.0)) * kPlotH; };

  std::string out = "<figure class=\"chart\" id=\"" + id + "\"><figcaption>" +
                    HtmlEscape(title) + "</figcaption>";
  out += "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 " + Coord(kW) + " " +
         Coord(kH) + "\" role=\"img\" aria-label=\"" + HtmlEscape(title) + "\"><title>" +
         HtmlEscape(title) + "</title>";
  // Grid, axes and their labels.
  for (double t : y.ticks) {
    const std::string yy = Coord(py(t));
    out += "<line class=\"grid\" x1=\"" + Coord(kLeft) + "\" x2=\"" + Coord(kW - kRight) +
           "\" y1=\"" + yy + "\" y2=\"" + yy + "\"/>";
    out += "<text class=\"ylabel\" x=\"" + Coord(kLeft - 6) + "\" y=\"" + Coord(py(t) + 4) +
           "\">" + HtmlEscape(y.label(t)) + "</text>";
  }
  for (int minutes = 60; minutes >= 0; minutes -= 15) {
    const std::string xx = Coord(px(minutes * 60.0));
    out += "<line class=\"grid\" x1=\"" + xx + "\" x2=\"" + xx + "\" y1=\"" + Coord(kTop) +
           "\" y2=\"" + Coord(kTop + kPlotH) + "\"/>";
    out += "<text class=\"xlabel\" x=\"" + xx + "\" y=\"" + Coord(kH - 10) + "\">" +
           (minutes == 0 ? std::string("now") : "&minus;" + std::to_string(minutes) + " min") +
           "</text>";
  }
  out += "<line class=\"axis\" x1=\"" + Coord(kLeft) + "\" x2=\"" + Coord(kW - kRight) +
         "\" y1=\"" + Coord(kTop + kPlotH) + "\" y2=\"" + Coord(kTop + kPlotH) + "\"/>";
  bool any = false;
  for (const auto& s : series) {
    std::string d;
    bool pen_down = false;
    size_t valued = 0;
    for (const auto& [ago, v] : s.points) {
      if (std::isnan(v)) {
        pen_down = false;
        continue;
      }
      d += pen_down ? " L" : " M";
      AppendCoord(d, px(ago));
      d += ' ';
      AppendCoord(d, py(v));
      pen_down = true;
      ++valued;
    }
    if (valued == 0) continue;
    any = true;
    const std::string name = HtmlEscape(s.name);
    out += "<path class=\"line\" d=\"" + d.substr(1) + "\" stroke=\"" + s.color + "\"" +
           (s.dashed ? " stroke-dasharray=\"5 3\"" : "") + " data-series=\"" + name +
           "\" data-points=\"" + std::to_string(valued) + "\"/>";
    size_t seen = 0;
    for (const auto& [ago, v] : s.points) {
      if (std::isnan(v)) continue;
      if (++seen < valued && valued > 60) continue;  // a long series: its last point only
      const std::string when = ago < 1 ? "now" : Duration(static_cast<int64_t>(ago)) + " ago";
      out += "<circle class=\"point\" cx=\"" + Coord(px(ago)) + "\" cy=\"" + Coord(py(v)) +
             "\" r=\"3\" fill=\"" + s.color + "\" data-series=\"" + name + "\" data-value=\"" +
             Printf("%.4f", v) + "\"><title>" + name + ": " + HtmlEscape(y.label(v)) + ", " +
             when + "</title></circle>";
    }
  }
  if (!any) {
    out += "<text class=\"empty\" x=\"" + Coord(kLeft + kPlotW / 2) + "\" y=\"" +
           Coord(kTop + kPlotH / 2) + "\">no traffic yet: points appear every " +
           std::to_string(StatusPage::kSampleEvery.count()) + " s</text>";
  }
  out += "</svg><ul class=\"legend\">";
  for (const auto& s : series) {
    out += "<li><span class=\"swatch" + std::string(s.dashed ? " dashed" : "") +
           "\" style=\"border-color:" + s.color + "\"></span>" + HtmlEscape(s.name) + "</li>";
  }
  out += "</ul></figure>";
  return out;
}

// The two charts: hit ratio per upstream, and bytes per second served to clients (all upstreams)
// against fetched from each upstream, one point per sampling interval of the last hour.
std::string Charts(const StatusSnapshot& s) {
  std::vector<Series> ratio, traffic;
  Series served{"served to clients (all upstreams)", "#333333", true, {}};
  const auto& h = s.history;
  for (size_t i = 0; i < s.upstreams.size(); ++i) {
    const std::string color = kPalette[i % std::size(kPalette)];
    ratio.push_back({s.upstreams[i].name, color, false, {}});
    traffic.push_back({"fetched from " + s.upstreams[i].name, color, false, {}});
  }
  double largest = 0;
  for (size_t i = 1; i < h.size(); ++i) {
    const double seconds = std::chrono::duration<double>(h[i].at - h[i - 1].at).count();
    const double ago = std::chrono::duration<double>(h.back().at - h[i].at).count();
    // A sliver of an interval (a page loaded just after a sample) says nothing about a rate.
    if (seconds < 1 || ago > static_cast<double>(StatusPage::kHistory.count())) continue;
    double served_bytes = 0;
    for (size_t u = 0; u < s.upstreams.size(); ++u) {
      auto d = TrafficHistory::Delta(h[i - 1], h[i], s.upstreams[u].name);
      ratio[u].points.push_back(
          {ago, d.requests == 0 ? kNoValue
                                : 100.0 * static_cast<double>(d.hits) /
                                      static_cast<double>(d.requests)});
      const double fetched = static_cast<double>(d.bytes_fetched) / seconds;
      traffic[u].points.push_back({ago, fetched});
      served_bytes += static_cast<double>(d.bytes_served);
      largest = std::max(largest, fetched);
    }
    served.points.push_back({ago, served_bytes / seconds});
    largest = std::max(largest, served_bytes / seconds);
  }
  // Upstreams that moved nothing in the hour would only draw a line along the axis.
  auto idle = [](const Series& x) {
    return std::none_of(x.points.begin(), x.points.end(),
                        [](const auto& p) { return !std::isnan(p.second) && p.second > 0; });
  };
  std::erase_if(traffic, idle);
  std::erase_if(ratio, [](const Series& x) {
    return std::all_of(x.points.begin(), x.points.end(),
                       [](const auto& p) { return std::isnan(p.second); });
  });
  traffic.insert(traffic.begin(), served);
  return "<section class=\"charts\"><h2>Last hour</h2>" +
         LineChart("chart-hit-ratio", "Hit ratio of client requests, per upstream", ratio,
                   PercentAxis()) +
         LineChart("chart-traffic", "Bytes per second: served to clients, fetched from upstreams",
                   traffic, RateAxis(largest)) +
         "</section>";
}

// ---- tables ---------------------------------------------------------------------------------

std::string Health(const StatusSnapshot::Upstream& u) {
  using State = cache::CircuitBreaker::State;
  switch (u.breaker) {
    case State::kOpen:
      return "<span class=\"bad\" data-breaker=\"open\">&#9675; open: not contacted for " +
             std::to_string(u.retry_after_s) + " s</span>";
    case State::kHalfOpen:
      return "<span class=\"warn\" data-breaker=\"half-open\">&#9680; probing</span>";
    default:
      return "<span class=\"good\" data-breaker=\"closed\">&#9679; healthy</span>";
  }
}

std::string RateLimit(const upstream::RateLimitInfo& rl) {
  if (rl.remaining < 0 && rl.limit < 0) return "<span class=\"dim\">none reported</span>";
  std::string out = "<data class=\"remaining\" value=\"" + std::to_string(rl.remaining) + "\">" +
                    (rl.remaining >= 0 ? std::to_string(rl.remaining) : "?") + "</data>";
  if (rl.limit >= 0) out += " of " + std::to_string(rl.limit);
  if (rl.window_s > 0) out += " per " + Duration(rl.window_s);
  if (!rl.source.empty()) out += "<br><span class=\"dim\">counted for " + HtmlEscape(rl.source) +
                                 "</span>";
  return out;
}

std::string UpstreamTable(const StatusSnapshot& s) {
  std::string out =
      "<section><h2>Upstreams</h2><table id=\"upstreams\"><thead><tr><th>upstream</th>"
      "<th>health</th><th class=\"num\">requests</th><th class=\"num\">hit ratio</th>"
      "<th class=\"num\">hits / misses / errors</th><th class=\"num\">served from cache</th>"
      "<th class=\"num\">fetched from upstream</th><th>rate limit (last seen)</th>"
      "<th class=\"num\">queued</th></tr></thead><tbody>";
  for (const auto& u : s.upstreams) {
    const std::string name = HtmlEscape(u.name);
    // Byte hit ratio's complement: what clients got that did not have to come from upstream.
    const uint64_t from_cache = u.bytes_served - std::min(u.bytes_served, u.bytes_fetched);
    const double share = u.requests == 0 ? 0
                                         : static_cast<double>(u.hits) /
                                               static_cast<double>(u.requests);
    out += "<tr data-upstream=\"" + name + "\"><th scope=\"row\">" + name +
           (u.is_default ? " <span class=\"tag\">default</span>" : "") + "</th><td>" +
           Health(u) + "</td><td class=\"num requests\">" + CountData(u.requests) +
           "</td><td class=\"num hit-ratio\">" + RatioData(u.hits, u.requests) +
           "<span class=\"bar\"><span style=\"width:" + Printf("%.1f", 100 * share) +
           "%\"></span></span></td><td class=\"num\">" + std::to_string(u.hits) + " / " +
           std::to_string(u.misses) + " / " + std::to_string(u.errors) +
           "</td><td class=\"num from-cache\">" + BytesData(from_cache) +
           "<br><span class=\"dim\">of " + BytesData(u.bytes_served) +
           " served</span></td><td class=\"num fetched\">" + BytesData(u.bytes_fetched) +
           "</td><td class=\"ratelimit\">" + RateLimit(u.rate_limit) + "</td><td class=\"num\">" +
           std::to_string(u.queued) + "</td></tr>";
  }
  return out + "</tbody></table></section>";
}

std::string FillTable(const StatusSnapshot& s) {
  std::string out = "<section><h2>Downloads in flight (<span class=\"count\">" +
                    CountData(static_cast<uint64_t>(std::max<int64_t>(0, s.fills_in_flight))) +
                    "</span>)</h2>";
  if (s.fills.empty()) {
    return out + "<p class=\"dim\" id=\"fills\">None: every blob asked for is in the store.</p>"
                 "</section>";
  }
  out += "<table id=\"fills\"><thead><tr><th>upstream</th><th>repository</th><th>blob</th>"
         "<th>progress</th><th class=\"num\">received</th></tr></thead><tbody>";
  for (const auto& f : s.fills) {
    const std::string digest = f.digest.str();
    out += "<tr><td>" + HtmlEscape(f.upstream) + "</td><td>" + HtmlEscape(f.repository) +
           "</td><td><code title=\"" + HtmlEscape(digest) + "\">" +
           HtmlEscape(digest.substr(0, 19)) + "&hellip;</code>" +
           (f.relayed ? " <span class=\"tag\">relayed, not stored</span>" : "") + "</td><td>";
    out += f.size > 0 ? "<progress max=\"" + std::to_string(f.size) + "\" value=\"" +
                            std::to_string(f.bytes) + "\"></progress>"
                      : std::string("<span class=\"dim\">waiting for upstream</span>");
    out += "</td><td class=\"num\">" + BytesData(f.bytes) + " of " +
           (f.size > 0 ? BytesData(f.size) : std::string("?")) + "</td></tr>";
  }
  if (s.fills_in_flight > static_cast<int64_t>(s.fills.size())) {
    out += "<tr><td colspan=\"5\" class=\"dim\">and " +
           std::to_string(s.fills_in_flight - static_cast<int64_t>(s.fills.size())) +
           " more</td></tr>";
  }
  out += "</tbody></table>";
  if (s.fill_waiters > 0) {
    out += "<p class=\"dim\">" + Plural(s.fill_waiters, "client") +
           " streaming from downloads in progress.</p>";
  }
  return out + "</section>";
}

std::string PulledTable(const StatusSnapshot& s) {
  std::string out = "<section><h2>Most pulled repositories</h2>";
  if (s.most_pulled.empty()) {
    return out + "<p class=\"dim\" id=\"most-pulled\">No manifest pulled yet.</p></section>";
  }
  out += "<table id=\"most-pulled\"><thead><tr><th class=\"num\">#</th><th>upstream</th>"
         "<th>repository</th><th class=\"num\">manifest GETs</th></tr></thead><tbody>";
  int rank = 0;
  for (const auto& p : s.most_pulled) {
    out += "<tr data-repository=\"" + HtmlEscape(p.repository) + "\"><td class=\"num\">" +
           std::to_string(++rank) + "</td><td>" + HtmlEscape(p.upstream) + "</td><td>" +
           HtmlEscape(p.repository) + "</td><td class=\"num\">" +
           (p.error > 0 ? "&le; " : "") + CountData(p.count) + "</td></tr>";
  }
  return out + "</tbody></table><p class=\"dim\">Since start; counted in bounded memory, so a "
               "count marked &le; may include pulls of repositories it displaced.</p></section>";
}

constexpr const char* kStyle = R"(
:root{color-scheme:light;--fg:#1b1f24;--dim:#59636e;--line:#d1d9e0;--bg:#f6f8fa}
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;color:var(--fg);margin:0;background:#fff}
header{background:#24292f;color:#fff;padding:14px 24px;display:flex;flex-wrap:wrap;gap:6px 24px;align-items:baseline}
header h1{font-size:20px;margin:0}
header span{color:#d0d7de}
main{max-width:1180px;margin:0 auto;padding:8px 24px 32px}
h2{font-size:16px;margin:24px 0 8px}
.tiles{display:grid;grid-template-columns:repeat(auto-fit,minmax(170px,1fr));gap:12px;margin-top:16px}
.tile{border:1px solid var(--line);border-radius:6px;padding:10px 14px;background:var(--bg)}
.tile .label{color:var(--dim);font-size:12px;text-transform:uppercase;letter-spacing:.04em}
.tile .value{font-size:22px;font-weight:600;font-variant-numeric:tabular-nums}
table{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums}
th,td{text-align:left;padding:6px 8px;border-bottom:1px solid var(--line);vertical-align:top}
thead th{font-size:12px;color:var(--dim);font-weight:600;border-bottom:2px solid var(--line)}
.num{text-align:right}
.dim{color:var(--dim);font-size:12px}
.tag{font-size:11px;border:1px solid var(--line);border-radius:10px;padding:0 6px;color:var(--dim);font-weight:400}
.good{color:#1a7f37}.warn{color:#9a6700}.bad{color:#cf222e;font-weight:600}
.bar{display:block;height:4px;background:var(--line);border-radius:2px;margin-top:3px}
.bar span{display:block;height:4px;background:#1a7f37;border-radius:2px}
progress{width:160px;height:12px}
code{font-size:12px}
.charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(480px,1fr));gap:8px 24px}
.charts h2{grid-column:1/-1}
figure{margin:0}
figcaption{font-weight:600;margin-bottom:4px}
svg{width:100%;height:auto;display:block}
svg .grid{stroke:#e6eaef;stroke-width:1}
svg .axis{stroke:#8c959f;stroke-width:1}
svg .line{fill:none;stroke-width:2;stroke-linejoin:round}
svg text{font-size:11px;fill:#59636e}
svg .ylabel{text-anchor:end}
svg .xlabel{text-anchor:middle}
svg .empty{text-anchor:middle;font-size:13px}
.legend{list-style:none;padding:0;margin:4px 0 0;display:flex;flex-wrap:wrap;gap:4px 16px;font-size:12px}
.swatch{display:inline-block;width:18px;border-top:3px solid;margin-right:6px;vertical-align:middle}
.swatch.dashed{border-top-style:dashed}
footer{color:var(--dim);font-size:12px;margin-top:28px}
footer a{color:inherit}
)";

}  // namespace

std::string HtmlEscape(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

std::string RenderStatusPage(const StatusSnapshot& s) {
  uint64_t requests = 0, hits = 0, served = 0, fetched = 0;
  for (const auto& u : s.upstreams) {
    requests += u.requests;
    hits += u.hits;
    served += u.bytes_served;
    fetched += u.bytes_fetched;
  }
  std::string out;
  out.reserve(32 * 1024);
  out += "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
         "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
         "<meta http-equiv=\"refresh\" content=\"30\"><title>regcache status</title><style>";
  out += kStyle;
  out += "</style></head><body><header><h1>regcache</h1><span>version <span id=\"version\">" +
         HtmlEscape(s.version) + "</span></span><span>up <span id=\"uptime\" data-seconds=\"" +
         std::to_string(s.uptime_s) + "\">" + Duration(s.uptime_s) + "</span></span><span>" +
         HtmlEscape(s.generated_at) + " &middot; refreshes every 30 s</span></header><main>";

  const std::string cap =
      s.store_cap_bytes > 0 ? " of " + HumanBytes(static_cast<uint64_t>(s.store_cap_bytes)) : "";
  out += "<div class=\"tiles\">";
  auto tile = [&out](const std::string& id, const std::string& label, const std::string& value,
                     const std::string& note) {
    out += "<div class=\"tile\" id=\"" + id + "\"><div class=\"label\">" + label +
           "</div><div class=\"value\">" + value + "</div><div class=\"dim\">" + note +
           "</div></div>";
  };
  tile("total-hit-ratio", "hit ratio", RatioData(hits, requests),
       Plural(static_cast<int64_t>(requests), "request"));
  tile("total-from-cache", "served from cache", BytesData(served - std::min(served, fetched)),
       "of " + HumanBytes(served) + " served");
  tile("total-fetched", "fetched from upstreams", BytesData(fetched), "into the cache");
  tile("storage", "storage used",
       BytesData(static_cast<uint64_t>(std::max<int64_t>(0, s.store_bytes))),
       Plural(s.store_blobs, "blob") + cap +
           (s.store_cap_bytes > 0
                ? Printf(" (%.0f%%)", 100.0 * static_cast<double>(s.store_bytes) /
                                          static_cast<double>(s.store_cap_bytes))
                : "") +
           (s.storage_degraded.empty()
                ? ""
                : "<br><span class=\"bad\">degraded: " + HtmlEscape(s.storage_degraded) +
                      "</span>"));
  tile("in-flight", "downloads in flight", std::to_string(std::max<int64_t>(0, s.fills_in_flight)),
       Plural(s.fill_waiters, "client") + " following them");
  tile("connections", "client connections", std::to_string(s.connections), "open now");
  out += "</div>";

  out += UpstreamTable(s);
  out += Charts(s);
  out += FillTable(s);
  out += PulledTable(s);
  out += "<footer>Hit ratio: manifest and blob requests answered from the store (fresh, "
         "revalidated or stale) of all answered. Served from cache: bytes sent to clients less "
         "bytes fetched from the upstream. Machine-readable: <a href=\"/metrics\">/metrics</a> "
         "&middot; <a href=\"/healthz\">/healthz</a> &middot; <a href=\"/readyz\">/readyz</a>"
         "</footer></main></body></html>\n";
  return out;
}

// ---- gathering ------------------------------------------------------------------------------

StatusPage::StatusPage(cache::Metrics& metrics, cache::UpstreamSet& upstreams,
                       cache::PullThroughCache& cache)
    : metrics_(metrics),
      upstreams_(upstreams),
      cache_(cache),
      started_(Clock::now()),
      history_(static_cast<size_t>(kHistory / kSampleEvery) + 1) {}

TrafficHistory::Sample StatusPage::Counters() {
  TrafficHistory::Sample s;
  s.at = Clock::now();
  for (const auto& [name, stats] : metrics_.Upstreams()) {
    s.upstreams.push_back({name,
                           {stats->Requests(), stats->Hits(), stats->bytes_served.load(),
                            stats->bytes_fetched.load()}});
  }
  return s;
}

void StatusPage::Sample() { history_.Add(Counters()); }

StatusSnapshot StatusPage::Snapshot() {
  StatusSnapshot s;
  s.version = kVersion;
  s.uptime_s = std::chrono::duration_cast<std::chrono::seconds>(Clock::now() - started_).count();
  const std::time_t now = std::time(nullptr);
  std::tm utc{};
  gmtime_r(&now, &utc);
  char when[32];
  std::strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S UTC", &utc);
  s.generated_at = when;

  cache::Upstream* default_upstream = upstreams_.Default();
  for (cache::Upstream* up : upstreams_.All()) {
    const cache::UpstreamStats& stats = *up->stats();
    StatusSnapshot::Upstream u;
    u.name = up->name();
    u.is_default = up == default_upstream;
    u.requests = stats.Requests();
    u.hits = std::min(stats.Hits(), u.requests);
    u.errors = std::min(stats.Results("error"), u.requests - u.hits);
    u.misses = u.requests - u.hits - u.errors;
    u.bytes_served = stats.bytes_served.load();
    u.bytes_fetched = stats.bytes_fetched.load();
    u.rate_limit = up->client().rate_limit();
    u.breaker = up->breaker().state();
    u.retry_after_s = up->breaker().RetryAfterSeconds();
    u.queued = up->requests().load() + up->fills().load();
    for (auto& e : up->stats()->pulls.Top(kPulledShown)) {
      s.most_pulled.push_back({up->name(), std::move(e.key), e.count, e.error});
    }
    s.upstreams.push_back(std::move(u));
  }
  std::stable_sort(s.most_pulled.begin(), s.most_pulled.end(),
                   [](const auto& a, const auto& b) { return a.count > b.count; });
  if (s.most_pulled.size() > kPulledShown) s.most_pulled.resize(kPulledShown);

  s.fills = cache_.InFlightFills(kFillsShown);
  s.fills_in_flight = metrics_.fills_in_flight.load();
  s.fill_waiters = metrics_.fill_waiters.load();
  s.store_bytes = metrics_.store_bytes.load();
  s.store_blobs = metrics_.store_blobs.load();
  s.store_cap_bytes = metrics_.store_cap_bytes.load();
  s.storage_degraded = cache_.StorageDegraded();
  if (std::string why = cache_.MetadataDegraded(); !why.empty()) {
    s.storage_degraded += (s.storage_degraded.empty() ? "" : "; ") + why;
  }
  s.connections = metrics_.connections.load();
  s.history = history_.Samples();
  s.history.push_back(Counters());
  return s;
}

}  // namespace regcache::http

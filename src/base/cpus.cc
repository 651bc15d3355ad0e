#include "base/cpus.h"

#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <fstream>
#include <sstream>
#include <string>

namespace regcache {
namespace {

std::optional<long long> ParseNumber(std::string_view s) {
  long long v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size() || v <= 0) return std::nullopt;
  return v;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// This process's cgroup path in /proc/self/cgroup: the v2 one ("0::/system.slice/x.service")
// for `controller` "", else the v1 hierarchy whose controller list names it ("4:cpu,cpuacct:/x").
std::string CgroupPath(std::string_view controller) {
  std::istringstream lines(ReadFile("/proc/self/cgroup"));
  std::string line;
  while (std::getline(lines, line)) {
    const size_t a = line.find(':');
    const size_t b = a == std::string::npos ? a : line.find(':', a + 1);
    if (b == std::string::npos) continue;
    std::string_view controllers(line.data() + a + 1, b - a - 1);
    const bool match =
        controller.empty()
            ? controllers.empty()
            : ("," + std::string(controllers) + ",").find("," + std::string(controller) + ",") !=
                  std::string::npos;
    if (match) return line.substr(b + 1);
  }
  return "";
}

// The quota of a cgroup v1 cpu controller directory, as cpu.max text ("QUOTA PERIOD"); the
// quota is -1 when there is none, which CpusFromCgroupMax rejects like "max".
std::string CgroupV1Max(const std::string& dir) {
  std::string quota = ReadFile(dir + "/cpu.cfs_quota_us");
  std::string period = ReadFile(dir + "/cpu.cfs_period_us");
  while (!quota.empty() && quota.back() == '\n') quota.pop_back();
  return quota + " " + period;
}

}  // namespace

std::optional<int> CpusFromCgroupMax(std::string_view text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.remove_suffix(1);
  const size_t space = text.find(' ');
  if (space == std::string_view::npos) return std::nullopt;
  auto quota = ParseNumber(text.substr(0, space));
  auto period = ParseNumber(text.substr(space + 1));
  if (!quota || !period) return std::nullopt;  // "max": no quota
  return static_cast<int>(std::max<long long>(1, (*quota + *period - 1) / *period));
}

std::optional<uint64_t> BytesFromCgroupMemoryLimit(std::string_view text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.remove_suffix(1);
  uint64_t v = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size() || v == 0) {
    return std::nullopt;  // "max", or nothing readable
  }
  return v;
}

uint64_t AvailableMemoryBytes() {
  const long pages = sysconf(_SC_PHYS_PAGES);
  const long page = sysconf(_SC_PAGE_SIZE);
  uint64_t bytes = pages > 0 && page > 0
                       ? static_cast<uint64_t>(pages) * static_cast<uint64_t>(page)
                       : uint64_t{1} << 30;
  // As for the CPU quota: the process's own cgroup, then the mounted root (in a container).
  // cgroup v1 reports "no limit" as a huge number, which the minimum ignores.
  const std::string v2 = CgroupPath("");
  for (const std::string& dir : {"/sys/fs/cgroup" + v2, std::string("/sys/fs/cgroup")}) {
    if (auto limit = BytesFromCgroupMemoryLimit(ReadFile(dir + "/memory.max"))) {
      return std::min(bytes, *limit);
    }
  }
  const std::string v1 = CgroupPath("memory");
  for (const std::string& dir :
       {"/sys/fs/cgroup/memory" + v1, std::string("/sys/fs/cgroup/memory")}) {
    if (auto limit = BytesFromCgroupMemoryLimit(ReadFile(dir + "/memory.limit_in_bytes"))) {
      return std::min(bytes, *limit);
    }
  }
  return bytes;
}

int AvailableCpus() {
  int cpus = 1;
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) == 0) cpus = std::max(1, CPU_COUNT(&set));
  // Inside a container the mounted hierarchy is the container's own cgroup; on a host, the
  // process's cgroup is a subdirectory named in /proc/self/cgroup. cgroup v2 first, then v1.
  const std::string v2 = CgroupPath("");
  for (const std::string& dir : {"/sys/fs/cgroup" + v2, std::string("/sys/fs/cgroup")}) {
    if (auto quota = CpusFromCgroupMax(ReadFile(dir + "/cpu.max"))) return std::min(cpus, *quota);
  }
  const std::string v1 = CgroupPath("cpu");
  for (const std::string& dir : {"/sys/fs/cgroup/cpu" + v1, std::string("/sys/fs/cgroup/cpu")}) {
    if (auto quota = CpusFromCgroupMax(CgroupV1Max(dir))) return std::min(cpus, *quota);
  }
  return cpus;
}

}  // namespace regcache

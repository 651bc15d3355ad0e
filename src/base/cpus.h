// How many CPUs this process can actually use, for sizing event loops: Linux's affinity mask
// (taskset, cpusets) lowered to a cgroup CPU quota (v2 `cpu.max` or v1 `cpu.cfs_quota_us`: a
// container's `--cpus`, systemd's CPUQuota=), which a plain count of the machine's cores ignores.
// Likewise the memory it may use, for sizing what grows with clients (the connection cap).
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace regcache {

// At least 1. Reads sched_getaffinity and the quota of this process's cgroup.
int AvailableCpus();

// The CPUs a cgroup v2 `cpu.max` text allows ("QUOTA PERIOD", rounded up; at least 1); nullopt
// for "max …" (no quota) or text that does not parse.
std::optional<int> CpusFromCgroupMax(std::string_view text);

// Bytes of memory this process may use: physical memory, lowered to its cgroup's limit (v2
// `memory.max`, v1 `memory.limit_in_bytes`: a container's `--memory`, systemd's MemoryMax=).
uint64_t AvailableMemoryBytes();

// The limit in a cgroup memory file's text (a byte count); nullopt for "max" (no limit) or text
// that does not parse.
std::optional<uint64_t> BytesFromCgroupMemoryLimit(std::string_view text);

}  // namespace regcache

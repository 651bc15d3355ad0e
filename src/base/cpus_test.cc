#include "base/cpus.h"

#include <gtest/gtest.h>
#include <sched.h>
#include <unistd.h>

namespace regcache {
namespace {

TEST(CpusTest, ParsesCgroupCpuMax) {
  EXPECT_EQ(CpusFromCgroupMax("max 100000\n"), std::nullopt);  // no quota
  EXPECT_EQ(CpusFromCgroupMax("200000 100000\n"), 2);
  EXPECT_EQ(CpusFromCgroupMax("150000 100000"), 2);  // 1.5 CPUs: two loops, not one
  EXPECT_EQ(CpusFromCgroupMax("50000 100000"), 1);
  EXPECT_EQ(CpusFromCgroupMax(""), std::nullopt);
  EXPECT_EQ(CpusFromCgroupMax("garbage"), std::nullopt);
  EXPECT_EQ(CpusFromCgroupMax("-5 100000"), std::nullopt);
  EXPECT_EQ(CpusFromCgroupMax("100000 0"), std::nullopt);
}

TEST(CpusTest, NeverMoreThanTheAffinityMask) {
  cpu_set_t set;
  CPU_ZERO(&set);
  ASSERT_EQ(sched_getaffinity(0, sizeof set, &set), 0);
  const int available = AvailableCpus();
  EXPECT_GE(available, 1);
  EXPECT_LE(available, CPU_COUNT(&set));
}

TEST(CpusTest, ParsesCgroupMemoryLimits) {
  EXPECT_EQ(BytesFromCgroupMemoryLimit("max\n"), std::nullopt);
  EXPECT_EQ(BytesFromCgroupMemoryLimit("536870912\n"), 536870912u);
  EXPECT_EQ(BytesFromCgroupMemoryLimit("9223372036854771712"), 9223372036854771712u);  // v1: none
  EXPECT_EQ(BytesFromCgroupMemoryLimit(""), std::nullopt);
  EXPECT_EQ(BytesFromCgroupMemoryLimit("0"), std::nullopt);
  EXPECT_EQ(BytesFromCgroupMemoryLimit("-1"), std::nullopt);
}

TEST(CpusTest, AvailableMemoryIsAtMostPhysicalMemory) {
  const uint64_t physical = static_cast<uint64_t>(sysconf(_SC_PHYS_PAGES)) *
                            static_cast<uint64_t>(sysconf(_SC_PAGE_SIZE));
  const uint64_t available = AvailableMemoryBytes();
  EXPECT_GT(available, 0u);
  EXPECT_LE(available, physical);
}

}  // namespace
}  // namespace regcache

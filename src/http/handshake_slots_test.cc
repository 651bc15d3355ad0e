#include "http/handshake_slots.h"

#include <gtest/gtest.h>

#include <vector>

namespace regcache::http {
namespace {

TEST(HandshakeSlotsTest, AtTheCapTheOldestHandshakeIsClosed) {
  HandshakeSlots slots;
  std::vector<int> closed;
  bool evicted = true;
  auto a = slots.Enter(
      2, [&] { closed.push_back(1); }, &evicted);
  EXPECT_FALSE(evicted);
  auto b = slots.Enter(
      2, [&] { closed.push_back(2); }, &evicted);
  EXPECT_FALSE(evicted);
  EXPECT_EQ(slots.in_progress(), 2u);
  auto c = slots.Enter(
      2, [&] { closed.push_back(3); }, &evicted);
  EXPECT_TRUE(evicted);
  EXPECT_EQ(closed, std::vector<int>{1});
  EXPECT_EQ(slots.in_progress(), 2u);
  a.reset();  // the closed one ends later: its place was given up already
  EXPECT_EQ(slots.in_progress(), 2u);
  b.reset();  // a handshake that finished
  EXPECT_EQ(slots.in_progress(), 1u);
  auto d = slots.Enter(
      2, [&] { closed.push_back(4); }, &evicted);
  EXPECT_FALSE(evicted);
  // A lower cap (after a reload) applies to the next one.
  auto e = slots.Enter(
      1, [&] { closed.push_back(5); }, &evicted);
  EXPECT_TRUE(evicted);
  EXPECT_EQ(closed, (std::vector<int>{1, 3}));
  EXPECT_EQ(slots.in_progress(), 2u);
}

}  // namespace
}  // namespace regcache::http

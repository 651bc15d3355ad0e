#include "cache/breaker.h"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "upstream/registry_client.h"

namespace regcache::cache {
namespace {

int64_t CeilSeconds(std::chrono::steady_clock::duration d) {
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(d).count();
  return ms <= 0 ? 0 : (ms + 999) / 1000;
}

// A probe whose outcome never came back (a bug, or a call that hangs past every deadline) must
// not keep the breaker shut forever.
constexpr std::chrono::seconds kProbeTimeout{60};

}  // namespace

CircuitBreaker::CircuitBreaker(std::string name, BreakerOptions options, Clock clock)
    : name_(std::move(name)), options_(options), clock_(std::move(clock)) {}

std::chrono::steady_clock::time_point CircuitBreaker::Now() const {
  return clock_ ? clock_() : std::chrono::steady_clock::now();
}

Status CircuitBreaker::Admit() {
  std::lock_guard<std::mutex> lock(mu_);
  auto now = Now();
  if (state_ == State::kClosed) return Status::Ok();
  if (state_ == State::kOpen && now >= open_until_) {
    state_ = State::kHalfOpen;
    probe_in_flight_ = false;
    spdlog::info("upstream {}: circuit half-open, probing", name_);
  }
  if (state_ == State::kHalfOpen &&
      (!probe_in_flight_ || now - probe_started_ > kProbeTimeout)) {
    probe_in_flight_ = true;
    probe_started_ = now;
    return Status::Ok();
  }
  return RefusalLocked(now);
}

Status CircuitBreaker::Check() {
  std::lock_guard<std::mutex> lock(mu_);
  auto now = Now();
  if (state_ == State::kClosed || (state_ == State::kOpen && now >= open_until_)) {
    return Status::Ok();
  }
  if (state_ == State::kHalfOpen && (!probe_in_flight_ || now - probe_started_ > kProbeTimeout)) {
    return Status::Ok();
  }
  return RefusalLocked(now);
}

Status CircuitBreaker::RefusalLocked(std::chrono::steady_clock::time_point now) const {
  int64_t wait = std::max<int64_t>(1, CeilSeconds(open_until_ - now));
  if (last_failure_.code() == Code::kRateLimited) {
    return upstream::WithRetryAfter(
        Status(Code::kRateLimited, "upstream " + name_ + " is rate-limiting this cache"), wait);
  }
  return upstream::WithRetryAfter(
      Unavailable("upstream " + name_ + " is unavailable (circuit open after repeated failures)"),
      wait);
}

void CircuitBreaker::Open(std::chrono::milliseconds period, const Status& why) {
  period_ = period;
  open_until_ = Now() + period;
  probe_in_flight_ = false;
  if (state_ != State::kOpen) {
    spdlog::warn("upstream {}: circuit open for {} ms ({})", name_, period.count(),
                 why.ToString());
  }
  state_ = State::kOpen;
  last_failure_ = why;
}

void CircuitBreaker::Record(const Status& outcome) {
  const Code code = outcome.code();
  if (code == Code::kAborted) return;
  std::lock_guard<std::mutex> lock(mu_);
  if (code != Code::kUnavailable && code != Code::kRateLimited) {
    if (state_ != State::kClosed) spdlog::info("upstream {}: circuit closed", name_);
    state_ = State::kClosed;
    consecutive_failures_ = 0;
    period_ = std::chrono::milliseconds(0);
    probe_in_flight_ = false;
    last_failure_ = Status::Ok();
    return;
  }
  ++consecutive_failures_;
  if (code == Code::kRateLimited) {
    auto wait = std::chrono::milliseconds(1000 * upstream::RetryAfterSeconds(outcome));
    wait = std::clamp(wait, options_.open_for, options_.max_rate_limit_wait);
    Open(wait, outcome);
    return;
  }
  if (state_ == State::kHalfOpen) {
    Open(std::min(options_.max_open_for, std::max(options_.open_for, period_ * 2)), outcome);
  } else if (state_ == State::kClosed && consecutive_failures_ >= options_.failures) {
    Open(options_.open_for, outcome);
  }
}

CircuitBreaker::State CircuitBreaker::state() {
  std::lock_guard<std::mutex> lock(mu_);
  if (state_ == State::kOpen && Now() >= open_until_) return State::kHalfOpen;
  return state_;
}

int64_t CircuitBreaker::RetryAfterSeconds() {
  std::lock_guard<std::mutex> lock(mu_);
  if (state_ == State::kClosed) return 0;
  return CeilSeconds(open_until_ - Now());
}

}  // namespace regcache::cache

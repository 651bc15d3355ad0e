#!/bin/bash
# Builds the libFuzzer targets (clang, ASan + UBSan) in build-fuzz/ and runs each for SECONDS
# (default 30) on a temporary copy of its seed corpus in fuzz/corpus/<target>/, which is never
# modified. Prints one line per target; exits non-zero if any target fails to build, crashes,
# leaks, times out (10 s per input) or runs out of memory (2 GiB). Crash inputs, logs and the
# grown corpora go to a temporary directory whose path is printed; it is removed when every
# target passed, unless FUZZ_KEEP=1.
#
#   fuzz/run.sh [SECONDS]        FUZZ_JOBS=N: build parallelism (default 2)
set -uo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER_TARGET="${1:-30}"
JOBS="${FUZZ_JOBS:-2}"
TARGETS="fuzz_route fuzz_range fuzz_reference fuzz_manifest fuzz_www_authenticate fuzz_serve_config"
BUILD=build-fuzz

case "$SECONDS_PER_TARGET" in
  '' | *[!0-9]*) echo "usage: $0 [SECONDS]" >&2; exit 2 ;;
esac

if ! CC=clang CXX=clang++ nice -n 10 cmake -S . -B "$BUILD" -DREGCACHE_FUZZ=ON \
    -DREGCACHE_INTEGRATION_TESTS=OFF >/dev/null; then
  echo "fuzz: configuring $BUILD failed" >&2
  exit 1
fi

OUT="$(mktemp -d "${TMPDIR:-/tmp}/regcache-fuzz.XXXXXX")"
echo "fuzz: corpora, logs and crash artifacts in $OUT"
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"

failed=0
for t in $TARGETS; do
  if ! nice -n 10 cmake --build "$BUILD" -j"$JOBS" --target "$t" >"$OUT/$t.build.log" 2>&1; then
    printf '%-24s BUILD FAILED (see %s)\n' "$t" "$OUT/$t.build.log"
    failed=1
    continue
  fi
  mkdir -p "$OUT/$t/corpus" "$OUT/$t/artifacts"
  cp -R fuzz/corpus/"$t"/. "$OUT/$t/corpus/"
  dict=()
  [ -f "fuzz/$t.dict" ] && dict=(-dict="fuzz/$t.dict")
  nice -n 10 "$BUILD/fuzz/$t" -max_total_time="$SECONDS_PER_TARGET" -timeout=10 \
    -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$OUT/$t/artifacts/" "${dict[@]}" \
    "$OUT/$t/corpus" >"$OUT/$t.log" 2>&1
  rc=$?
  execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$OUT/$t.log" | tail -1)"
  per_s="$(sed -n 's/^stat::average_exec_per_sec: *//p' "$OUT/$t.log" | tail -1)"
  cov="$(grep -o 'cov: [0-9]*' "$OUT/$t.log" | tail -1)"
  if [ "$rc" -eq 0 ]; then
    printf '%-24s ok      %10s execs  %7s/s  %s\n' "$t" "${execs:-?}" "${per_s:-?}" "$cov"
  else
    artifact="$(ls "$OUT/$t/artifacts/" 2>/dev/null | head -1)"
    printf '%-24s FAILED  (exit %s) %s execs; log %s; artifact %s\n' "$t" "$rc" "${execs:-?}" \
      "$OUT/$t.log" "${artifact:+$OUT/$t/artifacts/$artifact}"
    grep -m3 -E '^(==[0-9]+==ERROR|SUMMARY|.*invariant failed|.*runtime error)' "$OUT/$t.log" |
      sed 's/^/    /'
    [ -n "$artifact" ] && echo "    reproduce: $BUILD/fuzz/$t $OUT/$t/artifacts/$artifact"
    failed=1
  fi
done
if [ "$failed" -eq 0 ] && [ "${FUZZ_KEEP:-0}" != 1 ]; then
  rm -rf "$OUT"
  echo "fuzz: all targets passed; removed $OUT (FUZZ_KEEP=1 keeps it)"
fi
exit "$failed"

#!/bin/sh
# Installs what regcache needs to build and test on Debian 12, skipping what is already there.
set -eu
PACKAGES="g++ cmake make pkg-config python3 openssl ca-certificates
  libboost1.81-dev libcurl4-openssl-dev libssl-dev nlohmann-json3-dev libyaml-cpp-dev
  libsqlite3-dev libre2-dev libcrypt-dev libcli11-dev libspdlog-dev libgtest-dev libgmock-dev libbenchmark-dev
  docker-registry skopeo nginx apache2-utils time clang libclang-rt-14-dev
  dpkg-dev file systemd chromium fonts-dejavu-core"
missing=""
for p in $PACKAGES; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "setup: installing$missing" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

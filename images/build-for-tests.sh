#!/usr/bin/env bash
# Builds the images tests/images.rs uses, installing the host tools first.
# Idempotent: builds are cached by content under the image cache
# (PYWARD_IMAGE_CACHE, default /var/cache/pyward/images), so a second run
# only checks the cache and the Docker tags. Needs root and a running Docker.
set -euo pipefail
cd "$(dirname "$0")/.."

export DEBIAN_FRONTEND=noninteractive
cache="${PYWARD_IMAGE_CACHE:-/var/cache/pyward/images}"

missing=()
command -v mmdebstrap >/dev/null 2>&1 || missing+=(mmdebstrap)
command -v skopeo >/dev/null 2>&1 || missing+=(skopeo)
[ -e /usr/bin/qemu-aarch64-static ] || missing+=(qemu-user-static)
command -v update-binfmts >/dev/null 2>&1 || missing+=(binfmt-support)
# mmdebstrap checks that a foreign architecture can run with arch-test (a
# Recommends, which --no-install-recommends would leave out).
command -v arch-test >/dev/null 2>&1 || missing+=(arch-test)
if [ "${#missing[@]}" -gt 0 ]; then
    echo "build-for-tests: installing ${missing[*]}"
    apt-get update -qq </dev/null
    apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null
fi

# arm64 runs under qemu-user through binfmt_misc.
if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
fi
if ! grep -qs '^enabled' /proc/sys/fs/binfmt_misc/qemu-aarch64; then
    update-binfmts --enable qemu-aarch64
fi

docker info >/dev/null

cargo build --quiet --bin pyward
pyward=./target/debug/pyward
start=$(date +%s)
"$pyward" image build python3.11-bookworm --arch amd64,arm64 --cache-dir "$cache"
"$pyward" image build python3.11-bookworm-sci --arch amd64 --cache-dir "$cache"
echo "build-for-tests: images ready in $(( $(date +%s) - start ))s"

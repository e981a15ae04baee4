#!/usr/bin/env bash
# Builds the Docker image the Docker runtime's tests run in, without any
# container registry: a Debian bookworm rootfs with python3 from Debian's
# packages (mmdebstrap), imported with `docker import`. Idempotent: does
# nothing when the image is already there. The real images come from
# `pyward image build`; this is the smallest stand-in for tests.
set -euo pipefail

image="${PYWARD_DOCKER_TEST_IMAGE:-pyward/python3.11-bookworm:amd64}"

if docker image inspect "$image" >/dev/null 2>&1; then
    echo "docker-test-image: $image already present"
    exit 0
fi

if ! command -v mmdebstrap >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mmdebstrap >/dev/null
fi

workdir="$(mktemp -d)"
trap 'rm -rf "$workdir"' EXIT
# The customize hooks: /work, the mount point of the work-dir tmpfs; and
# uid/gid 65534 named `sandbox`, as in the images `pyward image build` makes.
mmdebstrap --quiet --variant=apt --include=python3 \
    --customize-hook='mkdir -p "$1/work" && chmod 0755 "$1/work"' \
    --customize-hook='sed -i "s/^nobody:x:65534:65534:nobody:/sandbox:x:65534:65534:sandbox:/" "$1/etc/passwd"' \
    --customize-hook='sed -i "s/^nogroup:x:65534:/sandbox:x:65534:/" "$1/etc/group"' \
    bookworm "$workdir/rootfs.tar"
docker import "$workdir/rootfs.tar" "$image"
echo "docker-test-image: imported $image"

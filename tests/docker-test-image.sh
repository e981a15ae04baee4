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
# /work is where the runtime uploads the submission's files (as a tmpfs
# mount point); mmdebstrap's customize hook creates it in the rootfs.
mmdebstrap --quiet --variant=apt --include=python3 \
    --customize-hook='mkdir -p "$1/work" && chmod 0755 "$1/work"' \
    bookworm "$workdir/rootfs.tar"
docker import "$workdir/rootfs.tar" "$image"
echo "docker-test-image: imported $image"

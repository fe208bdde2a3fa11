#!/usr/bin/env bash
# Builds the coder image's base from Debian packages, without any container registry.
#
# There is no registry to pull `python:3.11-slim` from on the machines this runs on, so the
# base is a `debootstrap --variant=minbase bookworm` root file system with python3 and
# python3-venv, packed as a tarball and cached (built once per machine, about 150 MB), then
# `docker import`ed. infra/docker/coder.Dockerfile builds FROM it.
#
# Usage: infra/docker/coder_base.sh DOCKER_HOST_URL [TAG]
#   DOCKER_HOST_URL  e.g. unix:///var/run/docker.sock
#   TAG              default codegen-orchestrator/coder-base:bookworm
# Cache: $CODER_BASE_CACHE, default ${XDG_CACHE_HOME:-$HOME/.cache}/codegen-orchestrator.
set -euo pipefail

docker_host=${1:?usage: coder_base.sh DOCKER_HOST_URL [TAG]}
tag=${2:-codegen-orchestrator/coder-base:bookworm}
cache=${CODER_BASE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/codegen-orchestrator}
tarball=$cache/coder-base-bookworm.tar
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

if [[ ! -s $tarball ]]; then
    command -v debootstrap >/dev/null || {
        echo "debootstrap is missing: apt-get install -y debootstrap" >&2; exit 1; }
    mkdir -p "$cache"
    rootfs=$(mktemp -d "$cache/rootfs.XXXXXX")
    trap 'rm -rf "$rootfs"' EXIT
    debootstrap --variant=minbase --include=python3,python3-venv bookworm "$rootfs" "$mirror"
    # Package lists and caches are not needed at run time and only make the layer larger.
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" --numeric-owner -cf "$tarball.partial" .
    mv "$tarball.partial" "$tarball"
fi
DOCKER_HOST=$docker_host docker import "$tarball" "$tag" >/dev/null
echo "$tag"

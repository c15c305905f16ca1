#!/usr/bin/env bash
# Local stand-ins for the upstream base images, for machines that cannot reach the image registry (the CI
# machines: see tests/stack/). Built from Debian bookworm packages, cached between runs on the same machine:
#
#   docker/ci/standins.sh       # needs a Docker engine (DOCKER_HOST), debootstrap, and root for debootstrap
#
# Prints, for the build and for docker-compose:
#   PYTHON_IMAGE=ddpg-ci/python:3.11-bookworm      (the Dockerfile's ARG PYTHON_IMAGE)
#   POSTGRES_IMAGE=ddpg-ci/postgres:bookworm       (docker-compose.yml's db image)
#
# The cache is a `docker save` of both images, keyed by this directory's files and the machine's CA bundle,
# under ${DDPG_DOCKER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ddpg-policy-service/docker}. Nothing in the
# project's Dockerfile or compose file depends on these images; with the real registries they are not needed.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
suite=bookworm
ca_bundle=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
cache_dir=${DDPG_DOCKER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ddpg-policy-service/docker}
python_image=ddpg-ci/python:3.11-bookworm
postgres_image=ddpg-ci/postgres:bookworm
base_image=ddpg-ci/debian:bookworm-minbase

log() { printf '%s standins: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

key=$(cat "$here/standins.sh" "$here/python.Dockerfile" "$here/postgres.Dockerfile" \
    "$here/postgres-entrypoint.sh" "$ca_bundle" | sha256sum | cut -c1-16)
cached="$cache_dir/standins-$suite-$key.tar"

have_images() { docker image inspect "$python_image" "$postgres_image" >/dev/null 2>&1; }

if have_images && [ "$(docker image inspect -f '{{index .Config.Labels "ddpg-ci.key"}}' "$python_image")" = "$key" ]; then
    log "already in the engine ($key)"
elif [ -s "$cached" ]; then
    log "loading $cached"
    docker load --quiet --input "$cached" >&2
else
    log "building from Debian $suite ($mirror); cache key $key"
    work=$(mktemp -d "${TMPDIR:-/var/tmp}/ddpg-standins.XXXXXX")
    trap 'rm -rf "$work"; docker image rm "$base_image" >/dev/null 2>&1 || true' EXIT
    debootstrap --variant=minbase "$suite" "$work/rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 \
        || { tail -n 30 "$work/debootstrap.log" >&2; exit 1; }
    rm -rf "$work/rootfs/var/cache/apt/archives/"*.deb "$work/rootfs/var/lib/apt/lists/"*
    tar -C "$work/rootfs" --numeric-owner -c . | docker import - "$base_image" >/dev/null
    rm -rf "$work/rootfs"

    mkdir -p "$work/context"
    cp "$here/python.Dockerfile" "$here/postgres.Dockerfile" "$here/postgres-entrypoint.sh" "$work/context/"
    cp "$ca_bundle" "$work/context/ca-certificates.crt"
    for spec in "python:$python_image" "postgres:$postgres_image"; do
        name=${spec%%:*}
        # --network host: apt reaches the mirror the way the host does.
        DOCKER_BUILDKIT=0 docker build --quiet --network host \
            --build-arg "BASE_IMAGE=$base_image" --label "ddpg-ci.key=$key" \
            -f "$work/context/$name.Dockerfile" -t "${spec#*:}" "$work/context" >&2
    done

    mkdir -p "$cache_dir"
    rm -f "$cache_dir"/standins-"$suite"-*.tar
    docker save --output "$cached.$$.partial" "$python_image" "$postgres_image"
    mv "$cached.$$.partial" "$cached"
    log "cached as $cached ($(du -h "$cached" | cut -f1))"
fi

echo "PYTHON_IMAGE=$python_image"
echo "POSTGRES_IMAGE=$postgres_image"

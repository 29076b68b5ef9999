#!/bin/sh
# make-base -- build a local debian:bookworm-slim base image with debootstrap
# and import it into the local container storage (podman/buildah), for hosts
# where no container registry is reachable. The rootfs tarball is cached in
# $SS_BASE_CACHE (default /var/cache/statesaver) and the image is reused while
# it exists, so reruns are fast.
# Usage: deploy/make-base.sh [--force]
set -eu
cache=${SS_BASE_CACHE:-/var/cache/statesaver}
tarball=$cache/debian-bookworm-slim.tar
image=docker.io/library/debian:bookworm-slim
force=0
[ "${1:-}" = "--force" ] && force=1

if [ "$force" -eq 0 ] && podman image exists "$image" 2>/dev/null; then
  echo "make-base: $image present, reused"
  exit 0
fi

# Same mirror as this machine's apt sources, so the base matches the host.
mirror=$(grep -hsE '^(URIs:|deb )' /etc/apt/sources.list /etc/apt/sources.list.d/*.sources \
           /etc/apt/sources.list.d/*.list 2>/dev/null |
         grep -E '/debian/?$|/debian ' | head -n1 |
         sed -E 's/^URIs:[[:space:]]*//; s/^deb[[:space:]]+(\[[^]]*\][[:space:]]+)?//; s/[[:space:]].*$//')
mirror=${mirror:-http://deb.debian.org/debian}

mkdir -p "$cache"
if [ "$force" -eq 1 ] || [ ! -s "$tarball" ]; then
  root=$(mktemp -d "$cache/rootfs.XXXXXX")
  trap 'rm -rf "$root"' EXIT
  echo "make-base: debootstrap --variant=minbase bookworm from $mirror" >&2
  debootstrap --variant=minbase bookworm "$root" "$mirror" >"$cache/debootstrap.log" 2>&1 || {
    tail -n 20 "$cache/debootstrap.log" >&2; exit 1; }
  # Trim like the official -slim image: no docs, man pages or locales in
  # later installs, and an empty apt cache.
  cat >"$root/etc/dpkg/dpkg.cfg.d/slim" <<'CFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
CFG
  cat >"$root/etc/apt/sources.list" <<SRC
deb $mirror bookworm main
deb $mirror bookworm-updates main
SRC
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* \
         "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/*
  tar -C "$root" --numeric-owner -cf "$tarball.tmp" .
  mv "$tarball.tmp" "$tarball"
fi
podman import --change 'CMD ["bash"]' "$tarball" "$image" >/dev/null
echo "make-base: imported $image from $tarball"

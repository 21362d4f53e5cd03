#!/usr/bin/env bash
# Install the system packages the tests use when they are missing (Debian/Ubuntu):
# OpenSSH server (real sshd on loopback), PostgreSQL (initdb/pg_ctl), Chromium (dashboard tests),
# podman and friends (the container image and compose.yaml, tests/container): catatonit for --init,
# the CNI dnsname plugin so compose services find each other by name.
set -euo pipefail
need=()
command -v sshd >/dev/null 2>&1 || [ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v ssh >/dev/null 2>&1 || need+=(openssh-client)
command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v runuser >/dev/null 2>&1 || need+=(util-linux)
for tool in podman buildah runc podman-compose; do command -v "$tool" >/dev/null 2>&1 || need+=("$tool"); done
command -v debootstrap >/dev/null 2>&1 || [ -x /usr/sbin/debootstrap ] || need+=(debootstrap)
[ -x /usr/libexec/podman/catatonit ] || need+=(catatonit)
[ -x /usr/lib/cni/dnsname ] || need+=(golang-github-containernetworking-plugin-dnsname)
exec bash "$(dirname "$0")/apt_install.sh" ${need[@]+"${need[@]}"}

#!/usr/bin/env bash
# Builds the agent-server image ohrun's docker sandbox uses by default, offline: a Debian trixie root
# filesystem (debootstrap, imported with `docker import`), Python 3.13 from Debian, the pinned
# openhands-agent-server from PyPI in /opt/agent-server, tmux and git. It runs like the official image
# (tini, uid 10001, WORKDIR /, /workspace, `--host 0.0.0.0 --port 8000`).
#
# The image is rebuilt only when its inputs change (this script, the version, the mirror): they are
# hashed into the label dev.ohrun.inputs. Where a registry is reachable, the official image works too:
#   docker pull ghcr.io/openhands/agent-server:1.58.2-python   (then `sandbox.image:` in the job)
#
# Usage: scripts/build-agent-server-image.sh [--force]
# Env:   DEBIAN_MIRROR (default http://deb.debian.org/debian), OHRUN_AGENT_IMAGE (the tag to build)
set -euo pipefail

VERSION=1.58.2
TAG=${OHRUN_AGENT_IMAGE:-ohrun/agent-server:${VERSION}-python}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUITE=trixie
PACKAGES=python3,python3-venv,tmux,git,ca-certificates,tini,procps,bash,coreutils

inputs=$( { cat "$0"; echo "$VERSION $MIRROR $SUITE $PACKAGES"; } | sha256sum | cut -c1-16)
current=$(docker image inspect "$TAG" --format '{{ index .Config.Labels "dev.ohrun.inputs" }}' 2>/dev/null || true)
if [[ "$current" == "$inputs" && "${1:-}" != "--force" ]]; then
  echo "$TAG is up to date (inputs $inputs)"
  exit 0
fi

if ! command -v debootstrap >/dev/null; then
  apt-get update -qq && apt-get install -y -qq debootstrap >/dev/null
fi

work=$(mktemp -d)
builder="ohrun-image-build-$$"
cleanup() {
  docker rm -f "$builder" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

echo "==> debootstrap $SUITE ($MIRROR)"
debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$work/rootfs" "$MIRROR" >"$work/debootstrap.log" 2>&1 \
  || { tail -n 30 "$work/debootstrap.log"; exit 1; }
rm -rf "$work/rootfs/var/lib/apt/lists/"* "$work/rootfs/var/cache/apt/"*.bin "$work/rootfs/usr/share/doc" "$work/rootfs/usr/share/man"

base="ohrun/agent-server-base:${inputs}"
echo "==> docker import $base"
tar -C "$work/rootfs" -c . | docker import - "$base" >/dev/null

# pip runs inside the image, on the host's network, trusting the host's CA bundle (some networks
# intercept TLS and pip on the host is configured for it).
ca=/etc/ssl/certs/ca-certificates.crt
echo "==> pip install openhands-agent-server==$VERSION"
docker run --name "$builder" --network host -v "$ca:/tmp/host-ca.crt:ro" -e PIP_CERT=/tmp/host-ca.crt "$base" /bin/sh -ec "
  python3 -m venv /opt/agent-server
  /opt/agent-server/bin/pip install --quiet --no-cache-dir --disable-pip-version-check openhands-agent-server==$VERSION
  groupadd -g 10001 openhands && useradd -u 10001 -g 10001 -m -s /bin/bash openhands
  mkdir -p /workspace/project && chown -R 10001:10001 /workspace
  /opt/agent-server/bin/python -c 'import openhands.agent_server'
"

echo "==> docker commit $TAG"
docker commit \
  --change 'ENTRYPOINT ["/usr/bin/tini", "--", "/opt/agent-server/bin/python", "-m", "openhands.agent_server"]' \
  --change 'CMD ["--host", "0.0.0.0", "--port", "8000"]' \
  --change 'WORKDIR /' \
  --change 'USER 10001' \
  --change 'EXPOSE 8000' \
  --change 'ENV PATH=/opt/agent-server/bin:/usr/local/bin:/usr/bin:/bin LC_ALL=C.UTF-8 HOME=/home/openhands LOG_JSON=true OH_ENABLE_VNC=false OH_ENABLE_VSCODE=false OH_ENABLE_BROWSER=false LITELLM_LOCAL_MODEL_COST_MAP=True OPENHANDS_SUPPRESS_BANNER=1' \
  --change "LABEL dev.ohrun.inputs=$inputs dev.ohrun.agent-server-version=$VERSION" \
  "$builder" "$TAG" >/dev/null
docker rmi "$base" >/dev/null 2>&1 || true
echo "built $TAG (inputs $inputs)"

#!/usr/bin/env bash
# Build the pinned upstream control plane the Kubernetes tests run on:
#   etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok, plus the kubelet of
#   the real worker node (tests/support/node.py; containerd, runc and CNI come from Debian); and
#   the clients the platform's own tests drive: etcdctl (etcd snapshots for backup and restore) and
#   helm (the Gaia chart is linted and rendered, deploy/helm).
#
#   scripts/build-control-plane.sh          # prints the folder holding the binaries
#
# Sources are the published Go modules (through the Go module proxy), pinned in tools/kube/go.mod
# (k8s.io/kubernetes with its staging modules replaced by their releases), tools/etcd/go.mod
# (a tiny main calling upstream etcdmain) and KWOK_VERSION below. Nothing built is committed: the
# binaries go to $GAIA_CONTROL_PLANE_DIR (default ~/.cache/gaia/control-plane/<versions>), and Go's
# own build cache makes a rebuild after a change quick. When the folder already holds binaries
# built from the same pins (a stamp file records them), the script does nothing: a second run
# takes well under a second. The first build takes minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."

KUBERNETES_VERSION=v1.37.2
ETCD_VERSION=v3.6.16
KWOK_VERSION=v0.8.0
HELM_VERSION=v4.3.2

cache_root=${XDG_CACHE_HOME:-$HOME/.cache}
out=${GAIA_CONTROL_PLANE_DIR:-$cache_root/gaia/control-plane/k8s-$KUBERNETES_VERSION-etcd-$ETCD_VERSION-kwok-$KWOK_VERSION}
binaries=(etcd etcdctl kube-apiserver kube-controller-manager kube-scheduler kubelet kwok kwok-stages.yaml helm)

stamp_of() {
  {
    echo "kubernetes $KUBERNETES_VERSION etcd $ETCD_VERSION kwok $KWOK_VERSION helm $HELM_VERSION"
    go version
    # paths relative to the repository root: a stamp must not depend on how the script was called
    sha256sum scripts/build-control-plane.sh tools/kube/go.mod tools/kube/go.sum \
      tools/etcd/go.mod tools/etcd/go.sum tools/etcd/main.go tools/etcd/tools.go
  } | sha256sum | cut -d' ' -f1
}

if ! command -v go >/dev/null; then
  echo "build-control-plane: no go command (install Go 1.26 or newer)" >&2
  exit 1
fi
stamp=$(stamp_of)
complete=1
for b in "${binaries[@]}"; do [ -e "$out/$b" ] || complete=0; done
if [ "$complete" = 1 ] && [ "$(cat "$out/.stamp" 2>/dev/null)" = "$stamp" ]; then
  echo "$out"
  exit 0
fi

mkdir -p "$out"
export GOFLAGS="-mod=readonly -buildvcs=false"
export CGO_ENABLED=0
started=$(date +%s)
echo "==> building the control plane into $out (minutes on a cold Go build cache)" >&2
# the version the binaries report (/version, kubectl version), as Kubernetes' own build sets it
minor=${KUBERNETES_VERSION#v1.}; minor=${minor%%.*}
version_flags=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  version_flags+=" -X $pkg.gitVersion=$KUBERNETES_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  version_flags+=" -X $pkg.gitTreeState=clean"
done
(
  cd tools/kube
  go build -ldflags="-s -w$version_flags" -o "$out/" \
    k8s.io/kubernetes/cmd/kube-apiserver \
    k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler \
    k8s.io/kubernetes/cmd/kubelet
)
echo "==> kubernetes $KUBERNETES_VERSION done after $(( $(date +%s) - started )) s" >&2
(cd tools/etcd && go build -ldflags="-s -w" -o "$out/etcd" .)
echo "==> etcd $ETCD_VERSION done after $(( $(date +%s) - started )) s" >&2
GOFLAGS="-buildvcs=false" GOBIN="$out" go install -ldflags="-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
echo "==> kwok $KWOK_VERSION done after $(( $(date +%s) - started )) s" >&2
# etcdctl's own module has replace directives, so "go install" refuses it: build it from the
# etcd pin's module, which requires it (tools/etcd/tools.go)
(cd tools/etcd && go build -ldflags="-s -w" -o "$out/etcdctl" go.etcd.io/etcd/etcdctl/v3)
GOFLAGS="-buildvcs=false" GOBIN="$out" go install -ldflags="-s -w" "helm.sh/helm/v4/cmd/helm@$HELM_VERSION"
echo "==> etcdctl $ETCD_VERSION and helm $HELM_VERSION done after $(( $(date +%s) - started )) s" >&2
# KWOK runs nothing without stages: take the project's own stage files from the module (nodes
# become Ready and keep a lease; pods become Ready, complete, and go when deleted).
kwok_src=$(go env GOMODCACHE)/sigs.k8s.io/kwok@$KWOK_VERSION/kustomize/stage
for stage in node/fast/node-initialize node/heartbeat-with-lease/node-heartbeat-with-lease \
             pod/fast/pod-ready pod/fast/pod-complete pod/fast/pod-delete; do
  cat "$kwok_src/$stage.yaml"
  echo "---"
done > "$out/kwok-stages.yaml"
echo "$stamp" > "$out/.stamp"
echo "$out"

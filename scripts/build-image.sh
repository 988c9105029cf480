#!/usr/bin/env bash
# Build Gaia's container image (deploy/gaia/Containerfile) with buildah.
#
#   scripts/build-image.sh [--tag IMAGE] [--push DESTINATION] [--tls-verify=false]
#
#   --tag     the image's name in the build storage (default localhost/gaia:<version>)
#   --push    where to put it afterwards: any buildah push destination, e.g.
#             docker://registry.example.com/gaia/gaia:0.1.0 or oci-archive:/tmp/gaia.tar
#
# Prints the image's name as its last line. What it prepares, in a build context of its own:
#
# - rootfs.tar: Debian 12 from the Debian archive by mmdebstrap (apt-get install mmdebstrap):
#   the Essential packages, python3 (3.11, the version Gaia targets), ca-certificates and
#   libstdc++6 (which manylinux wheels may link); no
#   apt, no documentation; a user gaia (uid 10001). Cached under the cache folder by the hash of
#   its recipe; GAIA_IMAGE_REFRESH=1 makes it again (the archive's security updates).
# - wheels/: the wheel of this checkout (its tracked files plus the console's browser libraries,
#   which scripts/console-assets.sh fetches from npm when they are missing) and every dependency
#   from PyPI as a binary wheel for CPython 3.11 on manylinux, constrained to the versions
#   installed in $PYTHON's environment (default .venv: what the test suite ran with).
#
# buildah keeps its images and layer cache in $GAIA_IMAGE_CACHE/storage (default
# ~/.cache/gaia/image-build), apart from the host's containers: a second build with nothing
# changed reuses every layer. It builds with --isolation chroot (no OCI runtime needed); the
# recipe is this repository's own, so running it as root is no more than running this script.
set -euo pipefail
cd "$(dirname "$0")/.."

tag=""
push=""
tls_verify=true
while [ $# -gt 0 ]; do
  case "$1" in
    --tag) tag=$2; shift 2 ;;
    --tag=*) tag=${1#--tag=}; shift ;;
    --push) push=$2; shift 2 ;;
    --push=*) push=${1#--push=}; shift ;;
    --tls-verify=*) tls_verify=${1#--tls-verify=}; shift ;;
    -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
    *) echo "build-image: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

PYTHON=${PYTHON:-.venv/bin/python}
for tool in buildah mmdebstrap git "$PYTHON"; do
  if ! command -v "$tool" >/dev/null; then
    echo "build-image: $tool is missing (Debian: apt-get install buildah mmdebstrap git;" \
      "PYTHON names a Python 3.11 with pip, default .venv/bin/python)" >&2
    exit 1
  fi
done
version=$("$PYTHON" -c 'import re,sys; print(re.search(r"__version__ = \"(.+)\"", open("gaia/__init__.py").read())[1])')
tag=${tag:-localhost/gaia:$version}

cache=${GAIA_IMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gaia/image-build}
mkdir -p "$cache"
buildah=(buildah --root "$cache/storage" --runroot "$cache/run")
context=$(mktemp -d "$cache/context.XXXXXX")
trap 'rm -rf "$context"' EXIT
started=$(date +%s)

# --- the Debian root file system --------------------------------------------------------------
suite=bookworm
mirrors=(
  "deb http://deb.debian.org/debian $suite $suite-updates main"
  "deb http://deb.debian.org/debian-security $suite-security main"
)
mmdebstrap_args=(
  --variant=essential --format=tar
  # libstdc++6: manylinux wheels may link it (google-re2's _re2 does) and expect the system's
  --include=python3,ca-certificates,libstdc++6
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright'
  --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*'
  --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/lintian/*'
  # the user the image runs as; the essential variant has no useradd (package passwd)
  --customize-hook='echo "gaia:x:10001:10001:Gaia:/var/lib/gaia:/usr/sbin/nologin" >> "$1/etc/passwd"'
  --customize-hook='echo "gaia:x:10001:" >> "$1/etc/group"'
  --customize-hook='mkdir -p "$1/var/lib/gaia" && chown 10001:10001 "$1/var/lib/gaia"'
  # apt's lists and caches are not needed without apt
  --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/* "$1"/var/cache/debconf/*-old'
)
recipe=$(printf '%s\n' "$suite" "${mirrors[@]}" "${mmdebstrap_args[@]}" | sha256sum | cut -c1-16)
rootfs="$cache/rootfs-$suite-$recipe.tar"
if [ ! -s "$rootfs" ] || [ "${GAIA_IMAGE_REFRESH:-}" = 1 ]; then
  echo "==> Debian $suite root file system (mmdebstrap)" >&2
  mmdebstrap --quiet "${mmdebstrap_args[@]}" "$suite" "$rootfs.partial" "${mirrors[@]}" >&2
  mv "$rootfs.partial" "$rootfs"
fi
# a changed recipe leaves its old root file system behind: a few hundred MiB each
find "$cache" -maxdepth 1 -name 'rootfs-*.tar' ! -name "$(basename "$rootfs")" -delete
# a hard link, not a copy: the context must hold it, and the cached tar is hundreds of MiB
ln "$rootfs" "$context/rootfs.tar" 2>/dev/null || cp "$rootfs" "$context/rootfs.tar"
echo "==> root file system ready after $(( $(date +%s) - started )) s" >&2

# --- the wheels -------------------------------------------------------------------------------
if [ ! -e gaia/console/static/vendor/htmx.min.js ] || [ ! -e gaia/api/static/swagger-ui.css ]; then
  echo "==> console assets (scripts/console-assets.sh)" >&2
  PYTHON=$PYTHON scripts/console-assets.sh >&2
fi
# the wheel is built from the tracked files (and the fetched assets), never from whatever else
# lies in the working tree
mkdir -p "$context/source" "$context/wheels"
{ git ls-files -z; find gaia/console/static/vendor gaia/api/static -type f -print0; } \
  | tar --null -T - -cf - | tar -xf - -C "$context/source"
# the commit's time in every zip entry: the same checkout gives the same wheel, byte for byte, so
# buildah's layer cache skips the install when nothing changed
SOURCE_DATE_EPOCH=$(git log -1 --format=%ct) \
  "$PYTHON" -m pip wheel --quiet --no-deps --wheel-dir "$context/wheels" "$context/source" >&2
# constraints are name==version only: a package installed from a file (name @ file://...)
# is left to PyPI's newest that fits
"$PYTHON" -m pip freeze --exclude-editable | grep -v ' @ ' > "$context/constraints.txt"
# pip takes a platform tag literally (manylinux_2_36 does not admit a manylinux_2_34 wheel), so
# every glibc the image's (Debian 12: 2.36) runs is named; abi3 and none for the stable-ABI and
# pure wheels (cryptography is cp311-abi3)
platforms=()
for glibc in $(seq 36 -1 5); do platforms+=(--platform "manylinux_2_${glibc}_$(uname -m)"); done
platforms+=(--platform "manylinux2014_$(uname -m)" --platform "manylinux2010_$(uname -m)")
platforms+=(--platform "manylinux1_$(uname -m)")
"$PYTHON" -m pip download --quiet --disable-pip-version-check --dest "$context/wheels" \
  --only-binary=:all: --implementation cp --python-version 3.11 \
  --abi cp311 --abi abi3 --abi none "${platforms[@]}" \
  --constraint "$context/constraints.txt" \
  "$(ls "$context"/wheels/gaia-*.whl)" pip >&2
rm -rf "$context/source"
echo "==> $(ls "$context/wheels" | wc -l) wheels ready after $(( $(date +%s) - started )) s" >&2

# --- the image --------------------------------------------------------------------------------
# --force-rm: a failed step leaves no working container mounted in the storage
"${buildah[@]}" build --quiet --layers --force-rm --isolation chroot --format oci \
  --label "org.opencontainers.image.version=$version" \
  --label "org.opencontainers.image.revision=$(git rev-parse HEAD)" \
  -f deploy/gaia/Containerfile -t "$tag" "$context" >&2
echo "==> image committed after $(( $(date +%s) - started )) s; checking that it runs Gaia" >&2
# the image must start Gaia: every module imported and the whole app built (gaia openapi), as
# the image's user; a wheel needing a library the root file system lacks fails here
check=$("${buildah[@]}" from --quiet --pull=false "$tag")
if ! "${buildah[@]}" run --isolation chroot "$check" -- gaia openapi >/dev/null; then
  "${buildah[@]}" rm "$check" >/dev/null
  echo "build-image: the image does not run 'gaia openapi' (above: why)" >&2
  exit 1
fi
"${buildah[@]}" rm "$check" >/dev/null
size=$("${buildah[@]}" images --format '{{.Size}}' "$tag")
echo "==> $tag built after $(( $(date +%s) - started )) s ($size unpacked)" >&2
if [ -n "$push" ]; then
  "${buildah[@]}" push --quiet --tls-verify="$tls_verify" "$tag" "$push" >&2
  echo "==> pushed to $push" >&2
fi
echo "$tag"

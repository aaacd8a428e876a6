#!/usr/bin/env bash
# Renders every kustomization under deploy/kubernetes/ and validates each object against
# the Kubernetes OpenAPI schemas, offline:
#   kubectl kustomize DIR | kubernetes-validate --strict -k VERSION -
# --strict rejects unknown fields (a misspelt key is an error, not silently dropped).
# kubernetes-validate bundles the schemas, so no cluster and no network are needed.
# An object whose kind it has no schema for (a CRD) fails here too, rather than passing
# unchecked.
#
#   bash deploy/kubernetes/validate.sh                     (from anywhere)
#   K8S_VERSIONS="1.31.0" bash deploy/kubernetes/validate.sh
#
# Also checks that the Helm values files in observability/ are valid YAML (the charts
# themselves are not rendered: that needs helm and the charts, i.e. the network).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# The oldest Kubernetes minor still in common use by kind/minikube users, and the
# newest that the installed kubernetes-validate knows (worked out below).
versions="${K8S_VERSIONS:-1.29.0 latest}"

fail() { echo "validate.sh: $*" >&2; exit 1; }

# --- tools ------------------------------------------------------------------------------
if ! command -v kubectl >/dev/null 2>&1; then
  fail "kubectl not found. Install kubectl 1.27 or newer (it embeds kustomize v5):
  https://kubernetes.io/docs/tasks/tools/  - Debian's kubernetes-client package (1.20) is too old."
fi
if ! kubectl kustomize --help >/dev/null 2>&1; then
  fail "this kubectl has no 'kustomize' subcommand; install kubectl 1.27 or newer."
fi
kustomize_version="$(kubectl version --client 2>/dev/null | sed -n 's/^Kustomize Version: //p')"
case "$kustomize_version" in
  v[5-9]*|v[1-9][0-9]*) ;;
  *) fail "kubectl embeds kustomize '${kustomize_version:-unknown}'; these manifests need v5 (kubectl 1.27+)." ;;
esac
if ! command -v kubernetes-validate >/dev/null 2>&1; then
  fail "kubernetes-validate not found. Install it with:  pip install kubernetes-validate"
fi
validator_version="$(kubernetes-validate --version)"
if [ -z "${K8S_VERSIONS:-}" ]; then
  latest="$(python3 -c 'import kubernetes_validate.utils as u; print(u.latest_version())' 2>/dev/null || true)"
  [ -z "$latest" ] || versions="1.29.0 $latest"
fi
echo "kubectl $(kubectl version --client 2>/dev/null | sed -n 's/^Client Version: //p'), kustomize $kustomize_version, kubernetes-validate $validator_version"

# --- kustomizations ---------------------------------------------------------------------
# observability/ builds ConfigMaps from files outside its directory (the repository's
# grafana/dashboards/*.json and alerts.yml, not copies), which kustomize allows only
# with the load restrictor off. Everything else must render with the default.
needs_loose_loading() { [ "$1" = observability ]; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

mapfile -t dirs < <(cd "$here" && find . -name kustomization.yaml -not -path '*/.*' -printf '%h\n' | sed 's|^\./||' | sort)
[ "${#dirs[@]}" -gt 0 ] || fail "no kustomization.yaml under $here"

status=0
for dir in "${dirs[@]}"; do
  flags=()
  if needs_loose_loading "$dir"; then flags=(--load-restrictor LoadRestrictionsNone); fi
  out="$work/$(echo "$dir" | tr / _).yaml"
  echo "--- $dir: kubectl kustomize ${flags[*]}"
  if ! kubectl kustomize "${flags[@]}" "$here/$dir" >"$out" 2>"$out.err"; then
    cat "$out.err" >&2
    echo "FAILED: $dir does not render" >&2
    status=1
    continue
  fi
  objects="$(grep -c '^kind: ' "$out" || true)"
  for version in $versions; do
    args=(--strict --quiet)
    [ "$version" = latest ] || args+=(-k "$version")
    # --quiet prints only problems; WARN (no schema for a kind) counts as a problem.
    if ! report="$(kubernetes-validate "${args[@]}" "$out" 2>&1)" || [ -n "$report" ]; then
      echo "$report" | sed "s|$out|$dir|" >&2
      echo "FAILED: $dir against Kubernetes ${version}" >&2
      status=1
    else
      echo "ok: $objects objects valid against Kubernetes ${version}"
    fi
  done
done

# --- Helm values --------------------------------------------------------------------------
echo "--- observability/*-values.yaml: YAML syntax"
for values in "$here"/observability/*-values.yaml; do
  if ! python3 -c 'import sys, yaml; yaml.safe_load(open(sys.argv[1]))' "$values" 2>"$work/values.err"; then
    cat "$work/values.err" >&2
    echo "FAILED: ${values#"$here"/} is not valid YAML" >&2
    status=1
  else
    echo "ok: ${values#"$here"/}"
  fi
done

if [ "$status" -ne 0 ]; then
  echo "validate.sh: FAILED" >&2
  exit "$status"
fi
echo "validate.sh: all kustomizations render and validate"

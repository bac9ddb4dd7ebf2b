#!/usr/bin/env bash
# Install the offline data that fedgmm.datasets reads (Debian/Ubuntu only, never downloads
# anything but Debian packages):
#   * Fashion-MNIST  -> `apt-get install dataset-fashion-mnist`
#                       (IDX files under /usr/share/datasets/fashion-mnist/)
#   * mlbench .rda   -> `apt-get download r-cran-mlbench` + `dpkg -x` into
#                       ${FEDGMM_DATA_HOME:-$HOME/.cache/fedgmm}/debian (no R needed)
# Idempotent: whatever is already present is skipped. Runs non-interactively as root (CI);
# as another user it uses sudo when available and otherwise prints what to run.
#
#   scripts/install-data.sh           install what is missing
#   scripts/install-data.sh --check   install nothing: exit 0 when every data set is present,
#                                     else 1, listing (stdout) each missing data set and the
#                                     tests under tests/ that will skip without it.
# Presence is looked up where fedgmm.datasets.locate looks: $FEDGMM_FASHION_MNIST_DIR and
# $FEDGMM_MLBENCH_DIR when set (and then only there), else the system paths and $FEDGMM_DATA_HOME.
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive

DATA_HOME="${FEDGMM_DATA_HOME:-${HOME:-/root}/.cache/fedgmm}"
DEB_ROOT="${DATA_HOME}/debian"
FMNIST_DIR=/usr/share/datasets/fashion-mnist
FMNIST_FILES=(train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz
              t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz)
MLBENCH_SUFFIX=usr/lib/R/site-library/mlbench/data
MLBENCH_FILES=(Shuttle.rda Satellite.rda BreastCancer.rda)

log() { printf 'install-data: %s\n' "$*"; }
die() { printf 'install-data: error: %s\n' "$*" >&2; exit 1; }

have_all() {  # have_all DIR FILE... -> true when every FILE exists and is non-empty in DIR
    local dir=$1; shift
    local f
    for f in "$@"; do [[ -s "${dir}/${f}" ]] || return 1; done
}

# --- --check: presence only, cheap (no apt, no Python) -------------------------------------
# data set -> files it needs (mlbench: one .rda each; Fashion-MNIST: the four IDX files)
declare -A MLBENCH_OF=([shuttle]=Shuttle.rda [satellite]=Satellite.rda [breastw]=BreastCancer.rda)

fmnist_dirs() { if [[ -n "${FEDGMM_FASHION_MNIST_DIR:-}" ]]; then echo "${FEDGMM_FASHION_MNIST_DIR}"; else echo "${FMNIST_DIR}"; fi; }
mlbench_dirs() {
    if [[ -n "${FEDGMM_MLBENCH_DIR:-}" ]]; then echo "${FEDGMM_MLBENCH_DIR}"
    else printf '%s\n' "/${MLBENCH_SUFFIX}" "${DEB_ROOT}/${MLBENCH_SUFFIX}"; fi
}
found_in() {  # found_in FILE... < dirs -> true when one of the dirs holds every FILE
    local dir
    while IFS= read -r dir; do have_all "${dir}" "$@" && return 0; done
    return 1
}

tests_needing() {  # tests_needing NAME -> test ids under tests/ that skip without data set NAME
    local repo tests fixture='^$NEVER'
    repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    tests="${repo}/tests"
    [[ -d "${tests}" ]] || return 0
    [[ "$1" == fashion-mnist ]] && fixture='def test_[A-Za-z0-9_]*\(.*fashion_mnist: Dataset'
    find "${tests}" -name 'test_*.py' -print0 | sort -z | xargs -0 awk -v pat="require(_data)?\\(\"$1\"\\)" \
        -v fix="${fixture}" -v root="${repo}/" '
        /^[ \t]*def test_/ { name = $0; sub(/^[ \t]*def /, "", name); sub(/\(.*/, "", name)
                             if ($0 ~ fix) print substr(FILENAME, length(root) + 1) "::" name; next }
        name != "" && $0 ~ pat { print substr(FILENAME, length(root) + 1) "::" name }' | sort -u
    # shipped studies whose quick profile reads the data set (tests/experiments/test_shipped_studies.py)
    local toml
    for toml in "${repo}"/src/fedgmm/studies/*.toml; do
        [[ -f "${toml}" ]] || continue
        awk -v want="\"$1\"" '
            /^\[/ { quick = ($0 ~ /^\[profiles\.quick\]/) }
            /^datasets[ \t]*=/ { if (quick) q = $0; else if (top == "") top = $0 }
            END { line = (q != "") ? q : top; exit !(index(line, want) > 0) }' "${toml}" \
            && echo "tests/experiments/test_shipped_studies.py::test_quick_profile_runs[$(basename "${toml}" .toml)]"
    done
    return 0
}

if [[ "${1:-}" == --check ]]; then
    MISSING=0
    if ! fmnist_dirs | found_in "${FMNIST_FILES[@]}"; then
        MISSING=1
        echo "fashion-mnist (Debian package dataset-fashion-mnist; looked in $(fmnist_dirs | paste -sd' '))"
        tests_needing fashion-mnist | sed 's/^/    /'
    fi
    for name in shuttle satellite breastw; do
        if ! mlbench_dirs | found_in "${MLBENCH_OF[$name]}"; then
            MISSING=1
            echo "${name} (${MLBENCH_OF[$name]} of r-cran-mlbench; looked in $(mlbench_dirs | paste -sd' '))"
            tests_needing "${name}" | sed 's/^/    /'
        fi
    done
    exit "${MISSING}"
elif [[ $# -gt 0 ]]; then
    die "unknown argument '$1' (usage: scripts/install-data.sh [--check])"
fi

command -v apt-get >/dev/null 2>&1 && command -v dpkg >/dev/null 2>&1 \
    || die "apt-get/dpkg not found: this script needs Debian or Ubuntu. Get the Debian packages \
dataset-fashion-mnist and r-cran-mlbench another way and unpack them with 'dpkg -x PKG.deb ${DEB_ROOT}'."

# How to run privileged commands: directly as root, via sudo, or not at all.
if [[ "$(id -u)" -eq 0 ]]; then
    SUDO=()
elif command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo --preserve-env=DEBIAN_FRONTEND)
else
    SUDO=(none)
fi

APT_UPDATED=0
apt_update() {  # apt-get update at most once, and only when something must be fetched
    [[ ${APT_UPDATED} -eq 1 ]] && return 0
    log "apt-get update"
    "${SUDO[@]}" apt-get update -qq
    APT_UPDATED=1
}

NEED_MANUAL=()

# --- Fashion-MNIST: a real system package --------------------------------------------------
if have_all "${FMNIST_DIR}" "${FMNIST_FILES[@]}"; then
    log "Fashion-MNIST already installed in ${FMNIST_DIR} (skipped)"
elif [[ "${SUDO[0]:-}" == none ]]; then
    NEED_MANUAL+=("apt-get update && apt-get install -y dataset-fashion-mnist   (as root)")
else
    apt_update
    log "apt-get install -y dataset-fashion-mnist"
    "${SUDO[@]}" apt-get install -y -qq --no-install-recommends dataset-fashion-mnist
    have_all "${FMNIST_DIR}" "${FMNIST_FILES[@]}" \
        || die "dataset-fashion-mnist installed but ${FMNIST_DIR} lacks ${FMNIST_FILES[*]}"
    log "Fashion-MNIST installed in ${FMNIST_DIR}"
fi

# --- mlbench: unpack the .deb into the user cache, without installing R --------------------
if have_all "/${MLBENCH_SUFFIX}" "${MLBENCH_FILES[@]}"; then
    log "mlbench data already installed system-wide in /${MLBENCH_SUFFIX} (skipped)"
elif have_all "${DEB_ROOT}/${MLBENCH_SUFFIX}" "${MLBENCH_FILES[@]}"; then
    log "mlbench data already unpacked in ${DEB_ROOT}/${MLBENCH_SUFFIX} (skipped)"
else
    if [[ "${SUDO[0]:-}" != none ]]; then
        apt_update
    fi
    TMP_DIR="$(mktemp -d)"
    trap 'rm -rf "${TMP_DIR}"' EXIT
    # Let apt's sandbox user write the download when we are root (avoids an 'unsandboxed' warning).
    if [[ "$(id -u)" -eq 0 ]] && id _apt >/dev/null 2>&1; then
        chown _apt "${TMP_DIR}" 2>/dev/null || true
    fi
    log "apt-get download r-cran-mlbench"
    if (cd "${TMP_DIR}" && apt-get download -qq r-cran-mlbench); then
        mkdir -p "${DEB_ROOT}"
        DEB_FILE="$(find "${TMP_DIR}" -maxdepth 1 -name 'r-cran-mlbench_*.deb' | head -n 1)"
        [[ -n "${DEB_FILE}" ]] || die "apt-get download produced no r-cran-mlbench_*.deb"
        dpkg -x "${DEB_FILE}" "${DEB_ROOT}"
        have_all "${DEB_ROOT}/${MLBENCH_SUFFIX}" "${MLBENCH_FILES[@]}" \
            || die "r-cran-mlbench unpacked but ${DEB_ROOT}/${MLBENCH_SUFFIX} lacks ${MLBENCH_FILES[*]}"
        log "mlbench data unpacked in ${DEB_ROOT}/${MLBENCH_SUFFIX}"
    else
        NEED_MANUAL+=("apt-get update   (as root), then: cd \$(mktemp -d) && apt-get download r-cran-mlbench && dpkg -x r-cran-mlbench_*.deb ${DEB_ROOT}")
    fi
fi

if [[ ${#NEED_MANUAL[@]} -gt 0 ]]; then
    log "not root and no sudo: run these yourself, then re-run this script:"
    for cmd in "${NEED_MANUAL[@]}"; do printf '    %s\n' "${cmd}"; done
    exit 1
fi
log "done"

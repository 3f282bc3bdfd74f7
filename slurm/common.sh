# Sourced by the sbatch scripts: checks the two variables every job needs and
# activates the repository's virtual environment (made by `make install`).
set -euo pipefail
: "${SLICELIB_DATA:?set SLICELIB_DATA to the DICOM collection (e.g. Prostate-MRI-US-Biopsy)}"
: "${SLICELIB_OUT:?set SLICELIB_OUT to the study folder shared by all jobs}"
cd "${SLURM_SUBMIT_DIR:-$(pwd)}"
if [ ! -x .venv/bin/slicelib ]; then
    echo "no .venv/bin/slicelib in $(pwd): run 'make install' in the repository first" >&2
    exit 2
fi
source .venv/bin/activate
mkdir -p "$SLICELIB_OUT/notebooks"

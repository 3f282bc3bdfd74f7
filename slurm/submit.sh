#!/bin/bash
# Submit the whole paper study: prepare -> train array -> evaluate and build the book.
# Usage: SLICELIB_DATA=/path/to/collection SLICELIB_OUT=/path/to/study bash slurm/submit.sh
set -euo pipefail
: "${SLICELIB_DATA:?set SLICELIB_DATA to the DICOM collection}"
: "${SLICELIB_OUT:?set SLICELIB_OUT to the study folder shared by all jobs}"
cd "$(dirname "$0")/.."

prepare=$(sbatch --parsable --export=ALL slurm/prepare.sbatch)
train=$(sbatch --parsable --export=ALL --dependency="afterok:${prepare}" slurm/train_array.sbatch)
book=$(sbatch --parsable --export=ALL --dependency="afterok:${train}" slurm/evaluate_and_book.sbatch)
echo "submitted: prepare ${prepare}, train array ${train}, evaluate and book ${book}"
echo "the book will be in ${SLICELIB_OUT}/html/index.html"

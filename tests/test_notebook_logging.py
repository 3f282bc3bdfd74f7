"""Long cells log their progress: a notebook's kernel sends slicelib's log to the cell's
output, so ``papermill --log-output`` (a SLURM job's output) prints each training epoch as
it ends; under the study runner it goes to the runner's log instead of the book."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from slicelib.study import Study
from slicelib.study.notebooks import KERNEL_LOG_ENV, NotebookJob, NotebookRunner

pytestmark = pytest.mark.slow  # each test starts a kernel; the first trains a model

ROOT = Path(__file__).resolve().parents[1]
EPOCH_LINE = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d cnn k=1 epoch 1/1: train loss [\d.]+, val loss [\d.]+, "
    r"PSNR [\d.]+ dB, SSIM [\d.]+, [\d.]+ samples/s, [\d.]+ s this epoch, 0.0 s left",
    re.MULTILINE,
)


def outputs(notebook: Path) -> str:
    """The text every cell of ``notebook`` printed."""
    cells = nbformat.read(notebook, as_version=4).cells
    return "".join(o.get("text", "") for c in cells for o in c.get("outputs", []))


def test_papermill_log_output_prints_one_line_per_epoch(tmp_path: Path) -> None:
    out = tmp_path / "train_cnn_k1.ipynb"
    command = [
        sys.executable, "-m", "papermill", str(ROOT / "notebooks" / "train.ipynb"), str(out),
        "--log-output", "--cwd", str(tmp_path), "-p", "preset", "smoke",
        "-p", "out_dir", str(tmp_path / "study"), "-p", "model", "cnn", "-p", "k", "1",
        "-p", "device", "cpu",
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != KERNEL_LOG_ENV}
    env.update(PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    done = subprocess.run(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, timeout=600
    )  # one stream, in the order papermill printed it
    printed = done.stdout
    assert done.returncode == 0, printed[-3000:]
    assert len(EPOCH_LINE.findall(printed)) == 1, printed[-3000:]  # smoke: 1 epoch
    # printed while its cell ran: between papermill's markers of that cell, after the
    # step began and before the cell's own result (the run's table)
    cell = next(c for c in printed.split("Executing Cell") if EPOCH_LINE.search(c))
    epoch = EPOCH_LINE.search(cell)
    assert epoch is not None and "Ending Cell" in cell[epoch.end() :]
    assert cell.index("training cnn_k1 ...") < epoch.start() < cell.index("best epoch")
    assert EPOCH_LINE.search(outputs(out))  # and kept in the executed notebook


def test_study_runner_forwards_kernel_log_and_keeps_it_out_of_the_notebook(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = tmp_path / "logs.ipynb"
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("# parameters", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell(
            "import logging\n"
            "from slicelib.study.notebooks import kernel_logging\n"
            "kernel_logging()\n"
            "for epoch in (1, 2):\n"
            "    logging.getLogger('slicelib.train').info('epoch %d/2 ended', epoch)\n"
            "print('a result')"
        ),
    ]
    nb.metadata.kernelspec = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, source)
    caplog.set_level(logging.INFO, logger="slicelib.study.notebooks")
    runner = NotebookRunner(Study("smoke", tmp_path / "study"))
    job = NotebookJob(name="logs", source=source)
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = str(ROOT)
    try:
        runner.execute(job)
    finally:
        os.environ.pop("PYTHONPATH") if old is None else os.environ.update(PYTHONPATH=old)
    forwarded = [r.getMessage() for r in caplog.records if r.getMessage().startswith("[logs]")]
    assert [line.split(" ", 3)[-1] for line in forwarded] == ["epoch 1/2 ended", "epoch 2/2 ended"]
    printed = outputs(runner.output(job))
    assert "a result" in printed and "ended" not in printed
    assert not list(runner.dir.glob(".logs.log"))  # the forwarding file is gone
    assert KERNEL_LOG_ENV not in os.environ

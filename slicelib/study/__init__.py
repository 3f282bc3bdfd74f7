"""The study: a workspace of steps, the notebooks that read it, the runner that executes
them with papermill, and the book built from what they computed."""

import warnings

with warnings.catch_warnings():
    # tqdm.auto (progress bars of the evaluation) warns in a kernel without ipywidgets
    # before it falls back to text bars; the warning would appear on every book page.
    warnings.simplefilter("ignore")
    import tqdm.auto  # noqa: F401

from slicelib.study.notebooks import notebook_study  # noqa: E402
from slicelib.study.workspace import Study, resolve_out_dir, slicelib_home  # noqa: E402

__all__ = ["Study", "notebook_study", "resolve_out_dir", "slicelib_home"]

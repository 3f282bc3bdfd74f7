"""Errors that are the user's to fix: the CLI prints them as one line and exits non-zero."""


class SlicelibError(Exception):
    """A problem with the user's input (file, series, parameter), reported in one line.

    The message must say what is wrong and where, e.g.
    ``"checkpoint runs/unet_k1/best.pt: key 'body.0.weight' missing (model 'unet')"``.
    """

    exit_code: int = 2

"""slicelib: a reproducible study of deep learning for MRI slice interpolation."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("slicelib")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]

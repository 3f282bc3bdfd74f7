"""slicelib: a reproducible study of deep learning for MRI slice interpolation."""

# The release, written once: pyproject.toml reads it (``dynamic = ["version"]``), so the
# installed metadata, ``slicelib --version`` and every record agree, an editable install
# included. Raised with each release (CHANGELOG.md, CITATION.cff);
# :func:`slicelib.environment.code_version` adds the commit.
__version__ = "0.2.0"

__all__ = ["__version__"]

"""x2 through-plane upsampling of a whole series.

- :mod:`slicelib.upsample.volume`: a volume in, the slices between its slices
  predicted (and their std), the acquired ones kept.
- :mod:`slicelib.upsample.dicom_writer`, :mod:`slicelib.upsample.nifti_writer`: the
  result as a labelled DERIVED DICOM series or a NIfTI file.
- :mod:`slicelib.upsample.folder`: the folder-level API of ``slicelib upsample``.
"""

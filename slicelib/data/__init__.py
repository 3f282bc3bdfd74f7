"""Data: scan and filter DICOM cohorts, load series, prepare the cache, triplet datasets.

Modules by concern:

- :mod:`~slicelib.data.headers`, :mod:`~slicelib.data.criteria`,
  :mod:`~slicelib.data.scan`: header-only scan, inclusion criteria, one series per patient.
- :mod:`~slicelib.data.dicom`, :mod:`~slicelib.data.nifti`: one series / file as a ``Volume``.
- :mod:`~slicelib.data.preprocess`, :mod:`~slicelib.data.split`,
  :mod:`~slicelib.data.prepare`: normalise and resize, split patients, write the cache.
- :mod:`~slicelib.data.cache`: the cache on disk; :mod:`~slicelib.data.triplets`: which
  slices are evaluable at k and the cohort counts; :mod:`~slicelib.data.dataset`: triplets.
- :mod:`~slicelib.data.synthetic`: the synthetic demo cohort.
"""

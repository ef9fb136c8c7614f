"""The library: device-agnostic pieces that know nothing of datasets or commands.

Flat modules: ``dpm`` (bins, teacher DPM), ``losses``, ``methods`` (the objective of each
method), ``students``, ``metrics``, ``sparsification``, ``explain``, ``checkpoint``,
``sync_batchnorm``, ``errors``, ``files``. A folder per subsystem: ``store/`` (the Zarr teacher
store), ``teachers/`` (any teacher behind one contract), ``pictures/`` (maps, figures),
``deploy/`` (export formats). Dataset constants (depth range, bins, sigma, crops) come from the
caller, who takes them from the dataset's description (:mod:`tiekd.data.description`).
"""

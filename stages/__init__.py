"""The commands: one module per command (a config dataclass or its import, ``run(cfg)`` and a
report) and a folder per engine a command drives, each engine's config beside it.

- ``cache_teacher`` (stage one) drives ``caching/`` (config, worker, dask cluster);
  ``train_student`` (stage two) drives ``training/`` (config, trainer, loop, sampler, logs,
  store identity, torchrun's processes).
- ``evaluate``, ``explain``, ``export``, ``demo`` (with ``demo_report``), ``cache_info``,
  ``cache_rm``, ``recipes``.
- Shared by all: ``evaluation`` (the evaluation engine of evaluate, validation and the demo),
  ``runtime`` (device, threads, progress) and ``config_file`` (``--config`` files).
"""

"""The engine of ``cache-teacher``: its config and checks (``config``), the work of one process
or dask worker on its shards (``worker``), and the dask cluster that maps shards (``cluster``)."""

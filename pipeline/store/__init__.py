"""The teacher store: a Zarr group per teacher and split holding quantised depth maps.

``cache`` opens and reads a group (:class:`TeacherCache`), ``writer`` fills one shard by shard,
``reader`` decodes one frame, ``formats`` defines what each store format's arrays hold, ``codec``
is the 2-D prediction filter (a zarr codec), ``repair`` rebuilds what ``cache verify`` finds lost,
``remote`` checks what a read-only HTTP store must offer, ``s3`` opens stores on S3 (one-line errors),
and ``shard_cache`` keeps local copies of remote stores' shards so later epochs read from disk.
"""

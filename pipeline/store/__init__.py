"""The teacher store: a Zarr group per teacher and split holding quantised depth maps.

``cache`` opens and reads a group (:class:`TeacherCache`), ``writer`` fills one shard by shard,
``reader`` decodes one frame, ``formats`` defines what each store format's arrays hold, ``codec``
is the 2-D prediction filter (a zarr codec), ``repair`` rebuilds what ``cache verify`` finds lost,
and ``remote`` checks what a read-only HTTP store must offer.
"""

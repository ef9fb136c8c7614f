"""Image-source frames packed into a store (``cache pack --images``, ``cache-teacher --images
--with-inputs``), so any node trains on a lab's own images and videos without their files.

A packed split of image sources (:mod:`tiekd.pipeline.store.inputs`, ``STORE/_inputs/<group>``) holds
exactly what :class:`~tiekd.data.sources.samples.SourceSamples` takes from the files: each frame decoded
and fitted to the store's size as stage one fitted it (:mod:`.fit`), uint8. It records the frames'
identity (:func:`~.listing.frames_identity`: ids, content hashes and fit) as ``split_sha256``, as the
teacher group does, so training reads a packed split only for the frames its group was made from.
Image sources carry no GT; ``full_size`` is the decoded frame's size, ``box`` the (top, left) of the
region that was fitted (``--fit crop``; (0, 0) for ``whole``), ``image_sha256`` the frame's content hash.
"""

from __future__ import annotations

import numpy as np

from tiekd.data.description import DatasetDescription
from tiekd.data.packed import PackedSource
from tiekd.data.sources.fit import aspect_box
from tiekd.data.sources.listing import SourceFrame, frames_identity
from tiekd.data.sources.samples import FrameDecoder
from tiekd.pipeline.errors import StoreError
from tiekd.pipeline.store.inputs import PackedFrame, PackedInputs


def packed_frame(decoder: FrameDecoder, frame: SourceFrame, *, dataset: DatasetDescription, fit: str) -> PackedFrame:
    """A source frame as packed: decoded (refused if its content changed since it was listed), fitted."""
    image = decoder.fitted(frame, dataset.cache_crop, fit=fit, place=dataset.cache_box)
    box = aspect_box(*frame.size, dataset.cache_crop, dataset.cache_box)[:2] if fit == "crop" else (0, 0)
    return PackedFrame(
        image=image,
        gt=np.zeros(dataset.cache_crop, np.uint16),
        full_size=tuple(frame.size),
        box=tuple(box),
        image_sha256=frame.sha256,
        gt_sha256="",
    )


def packed_sources(
    store: str | None, split: str, frames: list[SourceFrame], *, fit: str, dataset: DatasetDescription, group: str
) -> PackedSource | None:
    """The packed split ``split`` of ``store`` holding ``frames`` (of teacher group ``group``) as fitted with
    ``fit``; None where the store packs no split of that name (the files are read). Refused in one line
    where it packs other frames, another dataset's, or not all of them yet."""
    if store is None or not PackedInputs.holds(store, split):
        return None
    inputs = PackedInputs.open(store, split)
    if inputs.attrs.get("dataset") != dataset.name:
        raise StoreError(f"{inputs.location} holds {inputs.attrs.get('dataset')} inputs, this run is --dataset "
                         f"{dataset.name}; pass --dataset {inputs.attrs.get('dataset')} or pack this dataset")  # fmt: skip
    if inputs.attrs.get("split_sha256") != frames_identity(frames, fit):
        raise StoreError(
            f"{inputs.location} packs other frames than {group} was cached from (other images, order or --fit); "
            f"pack that group's images again with `tiekd cache pack --images ... --overwrite`, or remove the "
            f"packed split with `tiekd cache rm --inputs {split}`"
        )
    inputs.require_packed([frame.id for frame in frames], what="image-source frames")
    source = PackedSource((store, split), with_gt=False)
    source.require_unchanged()  # as checked: a run refuses it packed again later
    return source

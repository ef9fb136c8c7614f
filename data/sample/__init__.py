"""The procedural sample datasets of ``tiekd sample-data`` and the demo: KITTI-format streets
(``kitti``: scene ``street``, renderer ``render``) and NYU-format rooms (``nyu``, ``room``)."""

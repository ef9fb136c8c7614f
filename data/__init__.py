"""Datasets: one description per dataset (``description``, ``registry``; ``kitti``, ``nyu`` with
``nyu_mat``), split records (``records``), image readers (``images``), the torch datasets and
joint augmentation (``datasets``, ``augment``), and the procedural sample data (``sample/``)."""

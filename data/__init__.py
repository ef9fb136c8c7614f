"""Datasets (KITTI split records, readers, augmentation) and the sample-data generator."""

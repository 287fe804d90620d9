"""Datasets: Cityscapes files, the synthetic generator and the Datum LMDBs Caffe trains from."""
__all__ = ["cityscapes", "datum", "lmdb_io", "synthetic", "synthetic_objects", "synthetic_scene"]

"""dcme-caffe: Distance to Center of Mass Encoding (DCME) for instance segmentation, in BVLC Caffe.

Pure numpy modules (no Caffe import): ``encoding``, ``decoding``, ``cityscapes``, ``synthetic``, ``evaluation``.
Caffe-specific modules: ``unpool`` (Python layer), ``lmdb_io`` (Datum LMDBs), ``nets`` (NetSpec generators).
"""

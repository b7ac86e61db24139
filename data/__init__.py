"""Frames and datasets: frame stores (``storage``), training and test datasets, the registry
(``datasets.DATASETS``), transforms, MATLAB-bicubic resizing. Importing a module here imports
only what it needs (``data.storage`` stays free of torch, for create_lmdb's worker processes)."""

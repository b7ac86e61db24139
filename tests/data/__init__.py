"""Tests of data/: frame stores, datasets, transforms, sampling, resizing."""

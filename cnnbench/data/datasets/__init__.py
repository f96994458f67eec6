"""Every dataset cnnbench reads, one module per format as torchvision.datasets is laid out: `base` (the entry, the
registry and what a reader returns), `download` (fetching files, or naming those to place by hand), `scan` (trees of
image files read in place), and a module per reader, each registering its entries in `DATASETS` as it is imported.

Importing this package registers them all (as timm's models/__init__ does): outside cnnbench.data, look datasets up
through `cnnbench.data.catalog`. Every reader finds the files where torchvision (or Kaggle) puts them under `--root`
and downloads through torchvision only when asked. Image files are not decoded here; the caller decodes them with
`cnnbench.data.images` and reports the corrupt ones. torch, torchvision, scikit-learn and scipy are imported only
where a dataset is read, so listing the datasets stays quick and torch-free.
"""

from __future__ import annotations

from cnnbench.data.datasets.base import DATASETS, DatasetEntry, RawDataset, RawPart, ReadOptions, register

# This order is the registry's: `cnnbench datasets` lists the datasets in it, and an unknown name's error offers them
# in it. A reader added here is listed where it is imported.
from cnnbench.data.datasets.digits import read_digits
from cnnbench.data.datasets.mnist import read_mnist
from cnnbench.data.datasets.cifar import read_cifar10, read_cifar100
from cnnbench.data.datasets.flowers102 import read_flowers102
from cnnbench.data.datasets.catsdogs import read_catsdogs
from cnnbench.data.datasets.pets import read_pets
from cnnbench.data.datasets.folder import read_folder
from cnnbench.data.datasets.shapes import read_shapes

__all__ = [
    "DATASETS",
    "DatasetEntry",
    "RawDataset",
    "RawPart",
    "ReadOptions",
    "read_catsdogs",
    "read_cifar10",
    "read_cifar100",
    "read_digits",
    "read_flowers102",
    "read_folder",
    "read_mnist",
    "read_pets",
    "read_shapes",
    "register",
]

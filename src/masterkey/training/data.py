"""Image-classification data for transfer training: built-in offline datasets, any ``datasets`` dataset, column
detection, label mapping, timm preprocessing.

Three steps, each usable on its own:

1. :func:`load_image_dataset` turns a name into a ``datasets.DatasetDict``: one of :data:`BUILTIN_DATASETS`
   (offline, cached with datasets' own cache), a ``DatasetDict`` saved with ``save_to_disk``, an imagefolder
   (``train_dir`` / ``validation_dir`` or a folder of class sub-folders), or a Hub dataset id;
2. :func:`prepare_splits` finds the image and label columns, the train and evaluation splits (splitting the train
   split when there is no evaluation split), applies ``max_*_samples`` and builds a stable label mapping;
3. :class:`ImageClassificationDataset` wraps a split for a torch ``DataLoader``: RGB conversion, timm transforms
   (:func:`timm_transforms`), label ids, and the row id of every example. Given a ``seed``, the random augmentation
   of an example depends only on (seed, epoch, row): the same in every worker process and after a resume.

Unreadable images: :func:`check_images` opens and verifies every image of both splits before training starts
(PIL's ``verify``: the file structure and checksums, without decoding the pixels); an image that fails stops the run
with a one-line :class:`DatasetError` naming the file (or the split and the row: the row number in that split of the
source dataset), rather than being skipped silently: a skipped image would change what the reported accuracy means.
An image that passes the check and still fails to decode stops the run with the same kind of error when its batch
comes up. Remove such files, or drop such rows with ``Dataset.filter``, and run again.
"""

from __future__ import annotations

import contextlib
import difflib
import gzip
import hashlib
import importlib.util
import io
import logging
import pickle
import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
from PIL import Image
from sklearn.datasets import load_digits
from timm.data import create_transform, resolve_model_data_config

from ..errors import DatasetError

__all__ = [
    "BUILTIN_DATASETS",
    "BuiltinDataset",
    "register_dataset",
    "load_builtin_dataset",
    "find_builtin_dataset",
    "load_image_dataset",
    "prepare_splits",
    "PreparedSplits",
    "ImageClassificationDataset",
    "check_images",
    "timm_transforms",
    "EVAL_SPLIT_NAMES",
]

logger = logging.getLogger(__name__)

#: Split names taken as the evaluation split, in order of preference.
EVAL_SPLIT_NAMES = ("validation", "valid", "val", "test")
#: Label columns looked for by name when no column is a ``ClassLabel``.
LABEL_COLUMN_NAMES = ("label", "labels", "class", "target", "fine_label")


# -- built-in offline datasets ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BuiltinDataset:
    """A dataset masterkey can build offline, from arrays shipped by an installed package.

    ``load`` returns ``(images, labels)``: ``uint8`` images shaped ``(N, H, W)`` or ``(N, H, W, 3)`` and integer
    labels indexing ``class_names``. The train/test split is fixed: per class, the examples are ordered by a hash of
    ``(name, row)`` and the first ``test_fraction`` of them form the test split, so it never depends on a random
    generator's version. Bump ``version`` whenever ``load`` or the split changes: it is part of the cache key.
    """

    name: str
    class_names: tuple[str, ...]
    load: Callable[[], tuple[np.ndarray, np.ndarray]]
    description: str
    source: str
    license: str
    test_fraction: float = 0.2
    version: int = 1
    citation: str = ""

    def fingerprint(self, split: str) -> str:
        return f"masterkey-{self.name}-v{self.version}-{split}"


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and nothing else (the animal-mnist files are pickles of two arrays)."""

    ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}: only numpy arrays are expected")


def _animal_mnist_arrays() -> tuple[np.ndarray, np.ndarray]:
    spec = importlib.util.find_spec("animal_mnist")
    if spec is None or spec.origin is None:
        raise DatasetError(
            "The built-in dataset 'animal-mnist' comes from the 'animal-mnist' package, which is not installed: "
            "pip install --no-deps animal-mnist==0.4 (it declares tensorflow, which it does not need)."
        )
    folder = Path(spec.origin).parent / "data" / "Animal_MNIST"
    arrays = []
    for name in ("animal_data_version_3.gz", "animal_label_version_3.gz"):
        with gzip.open(folder / name, "rb") as f:
            arrays.append(np.asarray(_NumpyOnlyUnpickler(f).load()))
    images, labels = arrays
    return images.astype(np.uint8), labels.astype(np.int64)


def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    return images, digits.target.astype(np.int64)


#: Built-in offline datasets by name. Add one for every later run with :func:`register_dataset`, or for one run with
#: ``train_transfer(..., extra_datasets={name: BuiltinDataset(...)})``.
BUILTIN_DATASETS: dict[str, BuiltinDataset] = {
    d.name: d
    for d in (
        BuiltinDataset(
            name="animal-mnist",
            # the package's description lists the classes; labels 0-9 follow that (alphabetical) order, checked by eye
            class_names=("bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra"),
            load=_animal_mnist_arrays,
            description="Animal-MNIST: 10,000 grayscale 28x28 animal silhouettes, 10 classes of 1,000 "
            "(8,000 train / 2,000 test).",
            source="the 'animal-mnist' 0.4 package on PyPI (Sina Mohammadi), files animal_*_version_3.gz",
            license="mit",
        ),
        BuiltinDataset(
            name="digits",
            class_names=tuple(str(i) for i in range(10)),
            load=_digits_arrays,
            description="scikit-learn's handwritten digits: 1,797 grayscale 8x8 images, 10 classes "
            "(1,438 train / 359 test).",
            source="sklearn.datasets.load_digits (UCI ML hand-written digits, shipped with scikit-learn)",
            license="cc-by-4.0",
        ),
    )
}


def register_dataset(dataset: BuiltinDataset) -> BuiltinDataset:
    """Add a built-in dataset for every later run in this process (a few lines: a loader returning arrays, and its
    class names). Library code passes ``extra_datasets`` to the run instead, leaving this registry as it is.

    Example:
        >>> register_dataset(BuiltinDataset("tiny", ("a", "b"), load=my_arrays, description="...", source="...",
        ...                                 license="MIT"))
    """
    BUILTIN_DATASETS[dataset.name] = dataset
    return dataset


def find_builtin_dataset(
    name: str | Path | None, extra_datasets: Mapping[str, BuiltinDataset] | None = None
) -> BuiltinDataset | None:
    """The built-in dataset called ``name``: one of ``extra_datasets`` (looked up first), else of
    :data:`BUILTIN_DATASETS`; ``None`` when neither has it.

    Example:
        >>> find_builtin_dataset("digits").license
        'cc-by-4.0'
    """
    if name is None:
        return None
    name = str(name)
    if extra_datasets and name in extra_datasets:
        return extra_datasets[name]
    return BUILTIN_DATASETS.get(name)


def _builtin_names(extra_datasets: Mapping[str, BuiltinDataset] | None) -> list[str]:
    return [*BUILTIN_DATASETS, *(n for n in (extra_datasets or {}) if n not in BUILTIN_DATASETS)]


def _split_rows(name: str, labels: np.ndarray, test_fraction: float) -> dict[str, np.ndarray]:
    """Fixed stratified split: per class, rows ordered by a hash of (name, row); the first ``test_fraction`` go to
    test. Each split is then ordered by the same hash, so classes are interleaved."""

    def key(row: int) -> str:
        return hashlib.sha256(f"{name}/{row}".encode()).hexdigest()

    train, test = [], []
    for c in np.unique(labels):
        rows = sorted(np.flatnonzero(labels == c).tolist(), key=key)
        n_test = int(round(test_fraction * len(rows)))
        test += rows[:n_test]
        train += rows[n_test:]
    return {"train": np.array(sorted(train, key=key)), "test": np.array(sorted(test, key=key))}


def _builtin_rows(spec: BuiltinDataset, split: str):
    images, labels = spec.load()
    for row in _split_rows(spec.name, labels, spec.test_fraction)[split]:
        yield {"image": images[row], "label": int(labels[row])}


def load_builtin_dataset(
    name: str,
    *,
    cache_dir: str | Path | None = None,
    extra_datasets: Mapping[str, BuiltinDataset] | None = None,
):
    """A built-in dataset (one of ``extra_datasets``, else of :data:`BUILTIN_DATASETS`) as a
    ``datasets.DatasetDict`` with ``train`` and ``test`` splits and the columns ``image`` (``Image``) and ``label``
    (``ClassLabel`` with names).

    Built with ``Dataset.from_generator`` on first use and cached by datasets (``HF_DATASETS_CACHE`` or
    ``cache_dir``) under a fingerprint naming the dataset, its version and the split; later calls read the cache.

    Example:
        >>> dsd = load_builtin_dataset("animal-mnist")
        >>> dsd["train"].features["label"].names[:3]
        ['bear', 'bird', 'cat']
    """
    spec = find_builtin_dataset(name, extra_datasets)
    if spec is None:
        names = ", ".join(_builtin_names(extra_datasets))
        raise DatasetError(f"{name!r} is not a built-in dataset; they are: {names}.")
    label = datasets.ClassLabel(names=list(spec.class_names))
    features = datasets.Features({"image": datasets.Image(), "label": label})
    splits = {}
    for split in ("train", "test"):
        ds = datasets.Dataset.from_generator(
            _builtin_rows,
            features=features,
            gen_kwargs={"spec": spec, "split": split},
            cache_dir=None if cache_dir is None else str(cache_dir),
            split=datasets.NamedSplit(split),
            fingerprint=spec.fingerprint(split),
        )
        ds.info.description = spec.description
        ds.info.license = spec.license
        splits[split] = ds
    return datasets.DatasetDict(splits)


# -- any dataset -----------------------------------------------------------------------------------------------------
def load_image_dataset(
    name_or_path: str | Path | None = None,
    *,
    config_name: str | None = None,
    train_dir: str | Path | None = None,
    validation_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
    extra_datasets: Mapping[str, BuiltinDataset] | None = None,
):
    """Load an image-classification dataset as a ``datasets.DatasetDict``.

    ``name_or_path`` is one of ``extra_datasets`` or :data:`BUILTIN_DATASETS` (unless a local folder has that name),
    a folder written by ``DatasetDict.save_to_disk`` (or
    ``Dataset.save_to_disk``, which becomes the ``train`` split), an imagefolder (class sub-folders), or a Hub
    dataset id (with ``config_name``). Without it, ``train_dir`` (and optionally ``validation_dir``) are loaded as an
    imagefolder, as in transformers' ``run_image_classification_no_trainer.py``.

    Raises:
        DatasetError: nothing to load, or the dataset cannot be found or read (offline and not cached, ...).

    Example:
        >>> dsd = load_image_dataset("digits")
        >>> dsd = load_image_dataset(train_dir="photos/train", validation_dir="photos/val")
    """
    if name_or_path is None and train_dir is None:
        raise DatasetError("No dataset given: pass a dataset name (--dataset_name) or an image folder (--train_dir).")
    builtin = find_builtin_dataset(name_or_path, extra_datasets)
    if builtin is not None and not Path(name_or_path).exists():  # a local folder of that name wins
        return load_builtin_dataset(str(name_or_path), cache_dir=cache_dir, extra_datasets=extra_datasets)
    try:
        if name_or_path is None:
            data_files = {"train": str(Path(train_dir) / "**")}
            if validation_dir is not None:
                data_files["validation"] = str(Path(validation_dir) / "**")
            for split, folder in (("train", train_dir), ("validation", validation_dir)):
                if folder is not None and not Path(folder).is_dir():
                    raise DatasetError(f"The {split} folder {str(folder)!r} does not exist.")
            return datasets.load_dataset("imagefolder", data_files=data_files, cache_dir=_str(cache_dir))
        path = Path(name_or_path)
        if path.is_dir() and ((path / "dataset_dict.json").is_file() or (path / "state.json").is_file()):
            loaded = datasets.load_from_disk(str(path))
            return loaded if isinstance(loaded, datasets.DatasetDict) else datasets.DatasetDict({"train": loaded})
        if path.is_dir():
            return datasets.load_dataset("imagefolder", data_dir=str(path), cache_dir=_str(cache_dir))
        loaded = datasets.load_dataset(str(name_or_path), config_name, cache_dir=_str(cache_dir))
    except DatasetError:
        raise
    except Exception as e:  # datasets raises many types (FileNotFoundError, ConnectionError, DatasetNotFoundError...)
        raise DatasetError(_load_failure(str(name_or_path or train_dir), e, _builtin_names(extra_datasets))) from None
    if not isinstance(loaded, datasets.DatasetDict):
        loaded = datasets.DatasetDict({"train": loaded})
    return loaded


def _str(path: str | Path | None) -> str | None:
    return None if path is None else str(path)


def _load_failure(source: str, error: Exception, builtin_names: list[str]) -> str:
    first = (str(error).strip().splitlines() or [type(error).__name__])[0]
    hints = []
    close = difflib.get_close_matches(source, builtin_names, n=3, cutoff=0.6)
    if close:
        hints.append(f"Did you mean the built-in {', '.join(close)}?")
    if datasets.config.HF_HUB_OFFLINE:
        hints.append("The Hub is off (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE): only cached Hub datasets load.")
    hints.append(f"Built-in offline datasets: {', '.join(builtin_names)}.")
    return f"Cannot load the dataset {source!r}: {type(error).__name__}: {first} {' '.join(hints)}"


# -- columns, splits, labels -----------------------------------------------------------------------------------------
@dataclass
class PreparedSplits:
    """The train and evaluation splits of a dataset, ready to wrap: which columns hold images and labels, the label
    names and how each label value maps to a class id, and the source row of every example.

    ``train_rows`` / ``eval_rows`` are row numbers in ``train_source`` / ``eval_source`` (the split they came from),
    used as sample ids and in error messages.
    """

    train: Any
    eval: Any
    image_column: str
    label_column: str
    label_names: list[str]
    label_to_id: dict[Any, int] | None
    train_rows: np.ndarray
    eval_rows: np.ndarray
    train_source: str
    eval_source: str
    notes: list[str] = field(default_factory=list)

    @property
    def num_labels(self) -> int:
        return len(self.label_names)


def _describe_columns(ds) -> str:
    return ", ".join(f"{name} ({type(feature).__name__})" for name, feature in ds.features.items())


def _pick_column(ds, given: str | None, candidates: list[str], *, kind: str, flag: str, hint: str) -> str:
    if given is not None:
        if given not in ds.features:
            raise DatasetError(f"{flag} {given!r} is not a column; the columns are: {_describe_columns(ds)}.")
        return given
    if len(candidates) != 1:
        what = f"no {kind} column" if not candidates else f"several {kind} columns ({', '.join(candidates)})"
        raise DatasetError(f"The dataset has {what}; its columns are: {_describe_columns(ds)}. Pass {flag} ({hint}).")
    return candidates[0]


def detect_columns(ds, image_column: str | None = None, label_column: str | None = None) -> tuple[str, str]:
    """The image column (the ``Image`` feature) and the label column (the ``ClassLabel`` feature, else one named
    like a label) of ``ds``; given names are checked. Raises :class:`DatasetError` listing the columns that exist.

    Example:
        >>> from datasets import ClassLabel, Dataset, Features, Image
        >>> features = Features({"img": Image(), "y": ClassLabel(names=["a", "b"])})
        >>> detect_columns(Dataset.from_dict({"img": [], "y": []}, features=features))
        ('img', 'y')
    """
    features = ds.features
    images = [n for n, f in features.items() if isinstance(f, datasets.Image)]
    image_column = _pick_column(ds, image_column, images, kind="image", flag="--image_column_name",
                                hint="a datasets Image column, or a column of image file paths")  # fmt: skip
    labels = [n for n, f in features.items() if isinstance(f, datasets.ClassLabel)]
    if len(labels) != 1:  # several ClassLabels, or none: prefer the columns named like labels
        named = [n for n in LABEL_COLUMN_NAMES if n in features and n != image_column]
        labels = [n for n in labels if n in named] or (named if not labels else labels)
    label_column = _pick_column(ds, label_column, labels, kind="label", flag="--label_column_name",
                                hint="a ClassLabel column, or a column of integer or string labels")  # fmt: skip
    if image_column == label_column:
        raise DatasetError(f"The image and label columns are both {image_column!r}.")
    return image_column, label_column


def _as_image_column(ds, column: str, split: str):
    feature = ds.features[column]
    if isinstance(feature, datasets.Image):
        return ds
    if isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string", "binary", "large_binary"):
        return ds.cast_column(column, datasets.Image())
    raise DatasetError(
        f"The column {column!r} of the {split} split holds {feature!r}, not images; the columns are: "
        f"{_describe_columns(ds)}. Pass --image_column_name."
    )


def _label_mapping(train, evaluation, column: str) -> tuple[list[str], dict[Any, int] | None]:
    """``ClassLabel`` columns keep their names (identity mapping, ``None``). Other integer or string labels map to
    ids in sorted order of the values found in both splits, so the mapping is the same on every run."""
    feature = train.features[column]
    if isinstance(feature, datasets.ClassLabel):
        return list(feature.names), None
    values = set(train.unique(column)) | set(evaluation.unique(column))
    if None in values:
        raise DatasetError(f"The label column {column!r} has missing (None) labels.")
    try:
        ordered = sorted(values)
    except TypeError:
        raise DatasetError(
            f"The label column {column!r} mixes value types ({sorted({type(v).__name__ for v in values})}); "
            "labels must be all integers or all strings."
        ) from None
    if not all(isinstance(v, (int, np.integer, str)) for v in ordered):
        raise DatasetError(
            f"The label column {column!r} holds {type(ordered[0]).__name__} values; labels must be integers or "
            "strings (or a ClassLabel)."
        )
    return [str(v) for v in ordered], {v: i for i, v in enumerate(ordered)}


def _image_files(ds, image_column: str) -> list[str] | None:
    """The local file of every image of an ``Image`` column that stores files, not bytes (an imagefolder), read from
    Arrow without decoding or loading anything else; ``None`` for any other column."""
    if not isinstance(ds.features.get(image_column), datasets.Image):
        return None
    paths = []
    for chunk in ds.data.column(image_column).chunks:  # the struct's fields alone: zero-copy, no image bytes
        if not hasattr(chunk, "field") or chunk.field("bytes").null_count != len(chunk):
            return None
        paths += chunk.field("path").to_pylist()
    if any(p is None or not Path(p).is_absolute() for p in paths):
        return None
    return paths


def _refuse_one_folder(ds, source: str) -> None:
    """An imagefolder with a single class folder loads without a label column (datasets adds labels only when
    there are two folders or more): say that, rather than that the label column is missing."""
    images = [n for n, f in ds.features.items() if isinstance(f, datasets.Image)]
    paths = _image_files(ds, images[0]) if len(images) == 1 else None
    if not paths:
        return
    folders = {Path(p).parent for p in paths}
    if len(folders) == 1:
        (folder,) = folders
        raise DatasetError(
            f"{source} needs at least 2 classes, found 1 ({folder.name}): all its images are in {str(folder)!r}. An "
            "image folder holds one sub-folder of images per class; add a folder for each other class."
        )


def _subset(n: int, limit: int | None, seed: int) -> np.ndarray:
    """Positions ``0..n-1``, or ``limit`` of them drawn at random with ``seed``."""
    if limit is None or limit >= n:
        return np.arange(n)
    return np.random.default_rng(seed).permutation(n)[:limit]


def prepare_splits(
    dsd,
    *,
    image_column: str | None = None,
    label_column: str | None = None,
    train_val_split: float = 0.15,
    validation_from_train: bool = False,
    max_train_samples: int | None = None,
    max_eval_samples: int | None = None,
    seed: int = 42,
    source: str = "the dataset",
) -> PreparedSplits:
    """Pick the train and evaluation splits of ``dsd``, detect columns and build the label mapping.

    The evaluation split is the first of :data:`EVAL_SPLIT_NAMES` present; without one, or with
    ``validation_from_train`` (tuning hyperparameters without looking at the test split), ``train_val_split`` of the
    train split (drawn with ``seed``) is held out as the evaluation split.

    Example:
        >>> splits = prepare_splits(load_image_dataset("digits"), validation_from_train=True, seed=0)
        >>> splits.eval_source, len(splits.eval)
        ('train (held out)', 216)

    Raises:
        DatasetError: no train split, a missing image or label column, an empty split, unusable labels.
    """
    if "train" not in dsd:
        raise DatasetError(f"{source} has no 'train' split; its splits are: {', '.join(dsd) or 'none'}.")
    train_full = dsd["train"]
    eval_name = None if validation_from_train else next((s for s in EVAL_SPLIT_NAMES if s in dsd), None)
    try:
        image_column, label_column = detect_columns(train_full, image_column, label_column)
    except DatasetError:
        if label_column is None:
            _refuse_one_folder(train_full, source)
        raise
    notes = []
    if eval_name is None:
        if not 0.0 < train_val_split < 1.0:
            raise DatasetError(
                f"{source} has no evaluation split ({'/'.join(EVAL_SPLIT_NAMES)}) and --train_val_split is "
                f"{train_val_split}; pass a fraction between 0 and 1."
            )
        order = np.random.default_rng(seed).permutation(len(train_full))
        n_eval = int(round(train_val_split * len(train_full)))
        eval_rows, train_rows = np.sort(order[:n_eval]), np.sort(order[n_eval:])
        eval_full, eval_source = train_full, "train (held out)" if validation_from_train else "train"
        why = "--validation_from_train" if validation_from_train else "no evaluation split"
        notes.append(f"{why}: {n_eval} rows of 'train' held out (--train_val_split {train_val_split})")
    else:
        eval_full, eval_source = dsd[eval_name], eval_name
        detect_columns(eval_full, image_column, label_column)
        train_rows, eval_rows = np.arange(len(train_full)), np.arange(len(eval_full))
    for split, rows in (("train", train_rows), (eval_source if eval_name else "evaluation", eval_rows)):
        if len(rows) == 0:
            raise DatasetError(f"The {split} split of {source} is empty.")
    train_rows = train_rows[_subset(len(train_rows), max_train_samples, seed)]
    eval_rows = eval_rows[_subset(len(eval_rows), max_eval_samples, seed)]
    train = _as_image_column(train_full.select(train_rows), image_column, "train")
    evaluation = _as_image_column(eval_full.select(eval_rows), image_column, eval_source)
    label_names, label_to_id = _label_mapping(train, evaluation, label_column)
    if len(label_names) < 2:
        found = f"found {len(label_names)}" + (f" ({label_names[0]})" if label_names else "")
        raise DatasetError(
            f"{source} needs at least 2 classes, {found} in column {label_column!r}. Classification needs examples "
            "of two classes or more: add the other classes."
        )
    return PreparedSplits(
        train=train,
        eval=evaluation,
        image_column=image_column,
        label_column=label_column,
        label_names=label_names,
        label_to_id=label_to_id,
        train_rows=train_rows,
        eval_rows=eval_rows,
        train_source="train",
        eval_source=eval_source,
        notes=notes,
    )


# -- torch side ------------------------------------------------------------------------------------------------------
def timm_transforms(
    model: torch.nn.Module, resolution: int | None = None, *, crop_scale: Sequence[float] | None = None
) -> tuple[Any, Any, dict[str, Any]]:
    """timm's training and evaluation transforms for ``model`` (``resolve_model_data_config`` then
    ``create_transform``), at ``resolution`` when given, the training crop covering ``crop_scale`` of the image
    area (timm's default 0.08-1); also returns the data config (written next to the trained model so that inference
    preprocesses the same way).

    Example:
        >>> import timm
        >>> model = timm.create_model("mobilenetv2_100")
        >>> train, evaluate, data_config = timm_transforms(model, 64, crop_scale=(0.5, 1.0))
        >>> data_config["input_size"]
        (3, 64, 64)
    """
    args = {"input_size": (3, resolution, resolution)} if resolution else None
    config = resolve_model_data_config(model, args=args)
    scale = None if crop_scale is None else tuple(crop_scale)
    return create_transform(**config, is_training=True, scale=scale), create_transform(**config), config


class ImageClassificationDataset(torch.utils.data.Dataset):
    """A split of a ``datasets.Dataset`` as ``{"pixel_values", "labels", "ids"}`` examples for a torch DataLoader.

    Images become RGB (grayscale, palette, RGBA...) before ``transform``; labels become class ids; ``ids`` is the
    example's row in its source split. Batches are fetched with one ``Dataset.__getitems__`` call (a single Arrow
    read).

    With a ``seed``, ``transform``'s random numbers (Python's ``random``, NumPy's and torch's CPU generators) are
    seeded for each example from (seed, epoch, row) and the generators' states restored afterwards, so an example's
    augmentation is the same whichever worker process reads it, in whichever batch, and after a resume; without
    workers the training process's own generators are left as they were. :meth:`set_epoch` sets the epoch in
    shared memory, which the DataLoader's (persistent) worker processes read.

    Example:
        >>> ds = ImageClassificationDataset(split, image_column="image", label_column="label", transform=train_tf,
        ...                                 seed=42)
        >>> ds.set_epoch(1)
        >>> ds[0]["pixel_values"].shape
        torch.Size([3, 32, 32])
    """

    def __init__(
        self,
        dataset,
        *,
        image_column: str,
        label_column: str,
        transform: Callable[[Any], torch.Tensor],
        label_to_id: dict[Any, int] | None = None,
        row_ids: Sequence[int] | None = None,
        split: str = "train",
        seed: int | None = None,
    ):
        self.dataset = dataset
        self.image_column = image_column
        self.label_column = label_column
        self.transform = transform
        self.label_to_id = label_to_id
        self.row_ids = np.arange(len(dataset)) if row_ids is None else np.asarray(row_ids)
        self.split = split
        self.seed = seed
        # in shared memory: worker processes (forked or spawned, persistent or not) see the epoch the loop sets
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()

    @property
    def epoch(self) -> int:
        return int(self._epoch.item())

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch the augmentation of the next batches depends on (the training loop calls it before each
        epoch's first batch is requested)."""
        self._epoch.fill_(int(epoch))

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        indices = [int(i) for i in indices]
        try:
            batch = self.dataset[indices]
        except Exception as e:
            for i in indices:  # name the row that fails
                try:
                    self.dataset[i]
                except Exception as row_error:
                    raise self._unreadable(i, row_error) from None
            raise self._unreadable(indices[0], e) from None
        out = []
        epoch = self.epoch
        with _restored_rng(enabled=self.seed is not None):
            for i, image, label in zip(indices, batch[self.image_column], batch[self.label_column]):
                row = int(self.row_ids[i])
                if self.seed is not None:
                    _seed_everything(_example_seed(self.seed, epoch, row))
                try:
                    if image.mode != "RGB":
                        image = image.convert("RGB")
                    pixels = self.transform(image)
                except Exception as e:
                    raise self._unreadable(i, e) from None
                if self.label_to_id is not None:
                    label = self.label_to_id[label]
                out.append({"pixel_values": pixels, "labels": int(label), "ids": row})
        return out

    def _unreadable(self, index: int, error: Exception) -> DatasetError:
        row = int(self.row_ids[index])
        message = (str(error).strip().splitlines() or [""])[0]
        return DatasetError(
            f"The image in row {row} of the {self.split} split cannot be read ({type(error).__name__}: {message}). "
            f"Remove it, e.g. dataset.filter(lambda _, i: i != {row}, with_indices=True), and run again."
        )



def _example_seed(seed: int, epoch: int, row: int) -> int:
    """A 64-bit seed from (seed, epoch, row): a hash, so that neighbouring rows or epochs get unrelated streams."""
    digest = hashlib.blake2b(f"{seed}/{epoch}/{row}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.default_generator.manual_seed(seed)  # the CPU generator only: an accelerator's generator is left alone


@contextlib.contextmanager
def _restored_rng(*, enabled: bool) -> Iterator[None]:
    """Restore Python's, NumPy's and torch's CPU generator states on exit, so that seeding per example does not change
    the random numbers of whatever runs next in the same process (dropout, without DataLoader workers)."""
    if not enabled:
        yield
        return
    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])


def check_images(dataset, *, image_column: str, split: str, row_ids: Sequence[int] | None = None,
                 source: str = "the dataset", batch_size: int = 256) -> int:  # fmt: skip
    """Open and verify every image of ``dataset``'s ``image_column`` (an ``Image`` column) without decoding pixels:
    PIL's ``Image.open`` and ``verify`` on the stored bytes or file, which reads the header and, for PNG, every
    chunk and its checksum. Run before training so that a broken file stops the run before its first step, even when
    its batch would come late or never (``drop_last``). Returns the number of images checked.

    Raises:
        DatasetError: one line naming the first image that fails (its file, or its split and row: ``row_ids[i]``
            when given) and what to do.

    Example:
        >>> check_images(splits.train, image_column=splits.image_column, split="train", row_ids=splits.train_rows)
        1438
    """
    raw = dataset.cast_column(image_column, datasets.Image(decode=False))
    rows = np.arange(len(raw)) if row_ids is None else np.asarray(row_ids)
    for start in range(0, len(raw), batch_size):
        for offset, item in enumerate(raw[start : start + batch_size][image_column]):
            error = _verify_image(item)
            if error is not None:
                raise _undecodable(item, error, row=int(rows[start + offset]), split=split, source=source)
    return len(raw)


def _verify_image(item: Mapping[str, Any] | None) -> Exception | None:
    if item is None:
        return ValueError("no image (None)")
    data, path = item.get("bytes"), item.get("path")
    try:
        with Image.open(io.BytesIO(data) if data is not None else path) as image:
            image.verify()
    except Exception as e:  # PIL raises many types for a broken file (SyntaxError, OSError, struct.error, ...)
        return e
    return None


def _undecodable(item: Mapping[str, Any] | None, error: Exception, *, row: int, split: str,
                 source: str) -> DatasetError:  # fmt: skip
    reason = " ".join(str(error).split()) or "unreadable"
    path = (item or {}).get("path")
    if path and (item or {}).get("bytes") is None:
        return DatasetError(
            f"The image file {path!r} (row {row} of the {split} split of {source}) cannot be decoded "
            f"({type(error).__name__}: {reason}). Remove or replace the file and run again."
        )
    return DatasetError(
        f"The image in row {row} of the {split} split of {source} cannot be decoded ({type(error).__name__}: "
        f"{reason}). Drop the row, e.g. dataset.filter(lambda _, i: i != {row}, with_indices=True), and run again."
    )

"""The error raised when a dataset's files are missing and cannot be downloaded."""

from __future__ import annotations

__all__ = ["OFFLINE_DATASETS", "DatasetNotFoundError", "missing_dataset", "offline_hint"]

# datasets that need no download, and what each one needs instead
OFFLINE_DATASETS = {
    "digits": "bundled with scikit-learn",
    "mnist_idx": "MNIST IDX files already on disk, data.root=FOLDER",
}


def offline_hint(dataset: str | None = None) -> str:
    """The offline alternatives to ``dataset`` (never ``dataset`` itself, which just failed)."""
    others = [f"data={name} ({what})" for name, what in OFFLINE_DATASETS.items() if name != dataset]
    return "for offline development use " + " or ".join(others)


class DatasetNotFoundError(FileNotFoundError, RuntimeError):
    """A dataset is not in its folder, or downloading it failed.

    Subclasses both FileNotFoundError and RuntimeError (what torchvision raises), so either
    ``except`` catches it. ``dataset`` and ``root`` (absolute) are kept as attributes; the message
    names both, the layout expected, and how to get the files. Build one with
    :func:`missing_dataset`.
    """

    def __init__(self, message: str, dataset: str | None = None, root: str | None = None):
        super().__init__(message)
        self.dataset, self.root = dataset, root


def missing_dataset(dataset: str, root: str, reason: str, layout: str = "",
                    downloadable: bool = True, download_failed: bool = False) -> DatasetNotFoundError:
    """The error for ``dataset`` missing from ``root``; ``reason`` says what was wrong."""
    if download_failed:
        head = f"dataset {dataset!r} could not be downloaded into {root} ({reason})"
        how = f"Run once with internet access and data.download=true, or place the files in {root} yourself"
    else:
        head = f"dataset {dataset!r} not found in {root} ({reason})"
        how = ("Run once with internet access and data.download=true to download it there, or place the "
               "files there yourself" if downloadable else "It is not downloaded automatically: place the files there")
    where = f" Expected layout: {layout}." if layout else ""
    hint = offline_hint(dataset)
    return DatasetNotFoundError(f"{head}. {how}.{where} {hint[0].upper()}{hint[1:]}.", dataset, str(root))

"""The error raised when a dataset's files are missing and cannot be downloaded."""

from __future__ import annotations

__all__ = ["DatasetNotFoundError", "missing_dataset", "OFFLINE_HINT"]

OFFLINE_HINT = "for offline development use data=digits (bundled with scikit-learn) or data=mnist_idx"


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
    return DatasetNotFoundError(f"{head}. {how}.{where} {OFFLINE_HINT[0].upper()}{OFFLINE_HINT[1:]}.",
                                dataset, str(root))

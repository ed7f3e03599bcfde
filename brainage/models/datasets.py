"""The dataset of scans the training and prediction functions read: images, ages, ids."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

__all__ = ["VolumeDataset"]


def _load_volume(item: object, index: int) -> np.ndarray:
    """Return one image as a float32 array (C, D, H, W) from an array or a .npy/NIfTI path."""
    if isinstance(item, (str, Path)):
        path = Path(item)
        name = path.name.lower()
        if name.endswith(".npy"):
            array = np.load(path)
        elif name.endswith((".nii", ".nii.gz")):
            import nibabel as nib

            array = nib.load(path).get_fdata(dtype=np.float32)
        else:
            raise ValueError(f"images[{index}]: {path} is neither .npy nor .nii/.nii.gz")
    else:
        array = item.numpy() if isinstance(item, Tensor) else np.asarray(item)
    if array.ndim == 3:
        array = array[None]  # (D, H, W) -> (1, D, H, W)
    if array.ndim != 4:
        raise ValueError(f"images[{index}] must be 3-D (D, H, W) or 4-D (C, D, H, W), "
                         f"got shape {array.shape}")
    return np.ascontiguousarray(array, dtype=np.float32)


class VolumeDataset(Dataset):
    """Scans with ages and participant ids, as the training functions expect them.

    Parameters
    ----------
    images : array of shape (N, D, H, W) or (N, C, D, H, W), or sequence
        The scans, in memory or as a sequence of arrays or of ``.npy``/NIfTI paths (read on
        access).
    ages : sequence of float, length N
        Ages in years (finite).
    ids : sequence of str, length N
        Participant ids.
    transform : callable, optional
        Applied to each image tensor (C, D, H, W), e.g. a MONAI transform.

    Items are dicts ``{"image": float32 Tensor (C, D, H, W), "age": float,
    "participant_id": str}``.
    """

    def __init__(self, images: np.ndarray | Tensor | Sequence[Any], ages: Sequence[float],
                 ids: Sequence[str], transform: Callable[[Tensor], Tensor] | None = None) -> None:
        if isinstance(images, (np.ndarray, Tensor)):
            if images.ndim not in (4, 5):
                raise ValueError(f"images array must have shape (N, D, H, W) or (N, C, D, H, W), "
                                 f"got {tuple(images.shape)}")
        elif isinstance(images, (str, Path)) or not isinstance(images, Sequence):
            raise TypeError(f"images must be an array or a sequence of arrays/paths, "
                            f"got {type(images).__name__}")
        for index, item in enumerate(images if isinstance(images, Sequence) else []):
            if isinstance(item, (str, Path)) and not Path(item).exists():
                raise FileNotFoundError(f"images[{index}]: no such file {item}")
        self.ages = np.asarray(ages, dtype=np.float64).reshape(-1)
        self.ids = [str(i) for i in ids]
        if not len(images) == len(self.ages) == len(self.ids):
            raise ValueError(f"images, ages and ids must have the same length, got "
                             f"{len(images)}, {len(self.ages)} and {len(self.ids)}")
        if not np.all(np.isfinite(self.ages)):
            bad = [self.ids[i] for i in np.flatnonzero(~np.isfinite(self.ages))[:5]]
            raise ValueError(f"ages must be finite; not finite for participant(s) {bad}")
        self.images = images
        self.transform = transform

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image = torch.from_numpy(_load_volume(self.images[index], index))  # (C, D, H, W)
        if self.transform is not None:
            image = torch.as_tensor(self.transform(image), dtype=torch.float32)
        return {"image": image, "age": float(self.ages[index]),
                "participant_id": self.ids[index]}

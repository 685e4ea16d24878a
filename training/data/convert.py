"""Pixel conversions shared by the data sets: uint8 HWC arrays -> float32 CHW tensors in [0, 1]."""

import numpy as np
import torch

# ITU-R BT.601 luma weights, the same ones PIL uses for RGB -> L.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def to_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """Convert a float32 [H, W, C] image (C in {1, 3}) to `channels` (1 or 3) channels.

    Gray -> RGB repeats the plane; RGB -> gray takes the BT.601 luma.
    """
    have = image.shape[-1]
    if have == channels:
        return image
    if have == 1 and channels == 3:
        return np.repeat(image, 3, axis=-1)
    if have == 3 and channels == 1:
        return (image @ _LUMA)[..., None]
    raise ValueError(f"cannot convert {have} channels to {channels}")


def to_tensor(image: np.ndarray, channels: int) -> torch.Tensor:
    """uint8 [H, W] or [H, W, C] (or float in [0, 1]) -> float32 tensor [channels, H, W] in [0, 1]."""
    array = image.astype(np.float32)
    if image.dtype == np.uint8:
        array /= 255.0
    if array.ndim == 2:
        array = array[..., None]
    array = to_channels(array, channels)
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))

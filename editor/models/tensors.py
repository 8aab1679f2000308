"""Photos to and from the tensors of image-to-image models (LaMa, Real-ESRGAN): RGB in 0..1, NCHW."""
from __future__ import annotations

import numpy as np
import torch


def image_to_tensor(image: np.ndarray, device: str, dtype: torch.dtype) -> torch.Tensor:
    """`HxWx3 uint8` as a `1x3xHxW` tensor in 0..1 on `device`."""
    pixels = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None]
    return pixels.to(device, dtype) / 255.0


def tensor_to_image(tensor: torch.Tensor) -> np.ndarray:
    """The first image of a `Nx3xHxW` tensor in 0..1 as `HxWx3 uint8` (clamped and rounded)."""
    out = (tensor[0].float().clamp(0, 1) * 255.0).round().to(torch.uint8)
    return out.permute(1, 2, 0).cpu().numpy()

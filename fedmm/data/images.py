"""``data.square_images``: UCI Multiple Features' ``pix`` view as 16x16 images in [0, 1] (FedMMKT's image format).

One function prepares every copy of the data the same way: the coordinator's source as it
loads (:func:`fedmm.data.sources.load_source`, so the prepared data, the rehearsal site files
of ``fedmm export-sites`` and a loopback federation's site files hold the images) and a site's
own file (:class:`fedmm.fl.site.Site`, which may hold ``pix`` as UCI ships it). A view that is
already 16x16 is kept, so preparing twice changes nothing.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from fedmm.data.dataset import DatasetError, MultimodalDataset

IMAGE_VIEW = "pix"
SIDE = 16
PIX_SHAPE = (16, 15)
"""UCI ``pix``: 240 pixel averages (0-6) of a 15-wide, 16-tall image, row by row."""
PIX_MAX = 6.0
IMAGE_BOUNDS = (0.0, 1.0)


def resample(images: np.ndarray) -> np.ndarray:
    """(N, H, W) images to (N, 256) at 16x16 (bilinear), values kept."""
    import torch
    import torch.nn.functional as F

    tensor = torch.as_tensor(np.asarray(images, dtype=np.float32)).unsqueeze(1)
    return F.interpolate(tensor, size=(SIDE, SIDE), mode="bilinear", align_corners=False).flatten(1).numpy()


def square_images(dataset: MultimodalDataset) -> MultimodalDataset:
    """``dataset`` with ``pix`` as 16x16 images in [0, 1]: resampled from 16x15, divided by 6 (kept if already
    16x16; a dataset without ``pix`` is returned as it is)."""
    pix = dataset.modalities.get(IMAGE_VIEW)
    if pix is None or pix.shape[1:] == (SIDE * SIDE,):
        return dataset
    if pix.shape[1:] != (PIX_SHAPE[0] * PIX_SHAPE[1],):
        raise DatasetError(f"data.square_images: {IMAGE_VIEW!r} has shape {pix.shape[1:]}; expected UCI's "
                           f"{PIX_SHAPE[0] * PIX_SHAPE[1]} pixel averages (16x15) or a 16x16 image ({SIDE * SIDE})")
    images = resample(pix.reshape(-1, *PIX_SHAPE) / PIX_MAX)
    return replace(dataset, modalities={**dataset.modalities, IMAGE_VIEW: images},
                   channel_names={k: v for k, v in dataset.channel_names.items() if k != IMAGE_VIEW})

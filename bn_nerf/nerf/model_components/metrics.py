"""Image metrics that work without the internet.

PSNR and SSIM need nothing but the images. LPIPS needs AlexNet's ImageNet weights, which torchvision
downloads on first use; nerfstudio's vanilla-nerf builds LPIPS unconditionally and so crashes on a
machine without internet. Here LPIPS is computed only when those weights are already on disk, and
otherwise left out with one warning per process.
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path
from typing import Dict, Optional

import torch
from torch import Tensor, nn


def alexnet_weights_path() -> Path:
    """Where torchvision keeps AlexNet's weights once downloaded (the file LPIPS would fetch)."""
    from torchvision.models import AlexNet_Weights

    return Path(torch.hub.get_dir()) / "checkpoints" / Path(AlexNet_Weights.DEFAULT.url).name


@functools.lru_cache(maxsize=None)
def _lpips_on_cpu() -> Optional[nn.Module]:
    """The LPIPS network when its weights are on disk; built (and the warning given) once per process."""
    weights = alexnet_weights_path()
    if not weights.is_file():
        warnings.warn(
            f"LPIPS left out: its AlexNet weights are not on this machine ({weights}) and are not downloaded; "
            "PSNR and SSIM are reported",
            stacklevel=3,
        )
        return None
    from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

    return LearnedPerceptualImagePatchSimilarity(net_type="alex", normalize=True).eval()


def lpips_available() -> bool:
    return _lpips_on_cpu() is not None


def psnr(prediction: Tensor, target: Tensor) -> Tensor:
    """PSNR in dB for images in [0, 1]."""
    mse = torch.mean((prediction.float() - target.float()) ** 2)
    return -10.0 * torch.log10(mse.clamp_min(1e-10))


def image_metrics(prediction: Tensor, target: Tensor) -> Dict[str, float]:
    """PSNR, SSIM and, when its weights are on disk, LPIPS of one [H, W, 3] image in [0, 1]."""
    # From its own module: the root re-export (torchmetrics.functional) is deprecated and warns.
    from torchmetrics.functional.image import structural_similarity_index_measure

    # torchmetrics takes [N, C, H, W].
    prediction_nchw = prediction.float().clamp(0, 1).permute(2, 0, 1)[None]
    target_nchw = target.float().permute(2, 0, 1)[None]
    metrics = {
        "psnr": float(psnr(prediction_nchw, target_nchw)),
        "ssim": float(structural_similarity_index_measure(prediction_nchw, target_nchw, data_range=1.0)),
    }
    lpips = _lpips_on_cpu()
    if lpips is not None:
        lpips = lpips.to(prediction.device)
        with torch.no_grad():
            metrics["lpips"] = float(lpips(prediction_nchw, target_nchw))
    return metrics

"""The NeRF row of Table 1 is read, not trained: from the JSON that nerfstudio's `ns-eval` writes,
{"experiment_name", "method_name", "checkpoint", "results": {"psnr", "psnr_std", "ssim", ...}}."""

from __future__ import annotations

import json
from pathlib import Path

from bn_nerf.io.errors import InputError
from bn_nerf.io.images import require_file
from bn_nerf.sweep.paper import NERF_METRICS


def read_ns_eval(path: Path) -> dict[str, float]:
    """The Table 1 metrics (PSNR, and SSIM and LPIPS when present) of one `ns-eval` output."""
    path = require_file(path)
    try:
        document = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(f"{path}: not an ns-eval JSON file ({error})") from None
    results = document.get("results") if isinstance(document, dict) else None
    if not isinstance(results, dict) or not isinstance(results.get("psnr"), (int, float)):
        raise InputError(f"{path}: not an ns-eval output (no results.psnr)")
    return {metric: float(results[metric]) for metric in NERF_METRICS if isinstance(results.get(metric), (int, float))}

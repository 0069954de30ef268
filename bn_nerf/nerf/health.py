"""One warning instead of a run that trains silently to noise.

A scene read at the wrong scale or in the wrong frame, or lying outside the region a model covers,
does not fail: its rays miss the scene box (or every occupied cell) and composite onto the
background, the loss settles at the background's error, and 2,000 steps later `ns-eval` reports
5 dB. Two signs show it within a few hundred steps, long before the run ends: the training PSNR has
hardly risen from its first steps, or nearly every ray meets no occupied cell at all. `TrainingHealth` watches
both over the training steps and, once, says what is likely wrong and what to try.
"""

from __future__ import annotations

import logging
from collections import deque
from statistics import fmean

logger = logging.getLogger(__name__)

CHECK_AT_STEP = 300
"""The training step at which the run is judged: past the occupancy grid's warm-up, early enough to
stop a CPU run in its first minutes."""
WINDOW = 50
"""Steps averaged at the start and at the check."""
MIN_PSNR_RISE_DB = 3.0
"""A scene the model covers gains far more than this over its first few hundred steps (7-15 dB on the
project's scenes); a scene outside the region gains about what learning the background's colour gives."""
NEARLY_ALL_RAYS = 0.9
"""The fraction of rays meeting no occupied cell above which the rays miss the modelled region. Half
of a Blender scene's rays may rightly pass through empty space to the background (the embedded
scene: 52 % at step 300 of a run that ends at 27.7 dB); a scene read outside its region loses all."""


class TrainingHealth:
    """Training PSNR and the fraction of rays without samples, step by step; one warning at CHECK_AT_STEP
    when either says the scene is not where the model looks."""

    def __init__(self, label: str, region: str) -> None:
        self.label = label
        self.region = region
        self.steps = 0
        self.first_psnrs: list[float] = []
        self.recent_psnrs: deque[float] = deque(maxlen=WINDOW)
        self.recent_empty_fractions: deque[float] = deque(maxlen=WINDOW)
        self.warned = False

    def record(self, psnr: float, empty_ray_fraction: float) -> None:
        self.steps += 1
        if len(self.first_psnrs) < WINDOW:
            self.first_psnrs.append(psnr)
        self.recent_psnrs.append(psnr)
        self.recent_empty_fractions.append(empty_ray_fraction)
        if self.steps == CHECK_AT_STEP:
            self.check()

    @property
    def psnr_rise(self) -> float:
        return fmean(self.recent_psnrs) - fmean(self.first_psnrs)

    @property
    def empty_ray_fraction(self) -> float:
        return fmean(self.recent_empty_fractions)

    def check(self) -> None:
        rise, empty = self.psnr_rise, self.empty_ray_fraction
        if rise >= MIN_PSNR_RISE_DB and empty <= NEARLY_ALL_RAYS:
            return
        self.warned = True
        symptom = (f"{empty:.0%} of training rays meet no occupied cell" if empty > NEARLY_ALL_RAYS else
                   f"the training PSNR rose only {rise:.1f} dB ({fmean(self.first_psnrs):.1f} -> "
                   f"{fmean(self.recent_psnrs):.1f})")
        logger.warning(
            "%s: after %d steps %s: the scene likely lies outside the region the model covers (%s) -- read "
            "at the wrong scale or in the wrong format. Let the scene format be recognised from the folder "
            "(name no dataparser, or name bn-scene-data) and check the scene line it prints, or set "
            "--pipeline.model.collider-params.near-plane/far-plane and --pipeline.model.scene-contraction to fit it.",
            self.label, self.steps, symptom, self.region,
        )

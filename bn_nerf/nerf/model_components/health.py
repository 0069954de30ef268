"""One warning instead of a run that trains silently to noise.

A scene read at the wrong scale or in the wrong frame, or lying outside the region a model covers,
does not fail: its rays miss the scene box (or every occupied cell) and composite onto the
background, the loss settles at the background's error, and 2,000 steps later `ns-eval` reports
5 dB. Two signs show it within a few hundred steps, long before the run ends: the renders of the
training batches are hardly closer to the photos than one flat colour (each batch's mean) is, or
nearly every ray meets no occupied cell at all. `TrainingHealth` watches
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
"""Steps averaged before the check."""
MIN_GAIN_OVER_FLAT_DB = 3.0
"""A scene the model covers is rendered far more than this above its batches' flat colour after a few
hundred steps (bn-diner-cpu at step 300: fern 7.3 dB, fox 9.4 dB); a scene outside the region is rendered as the
background, no better than a flat colour. A rise from the first steps is no measure: a model learns
a capture's mean colour in its first few steps (fern: 11.8 to 15.4 dB by step 3, 19.4 at step 300)."""
NEARLY_ALL_RAYS = 0.9
"""The fraction of rays meeting no occupied cell above which the rays miss the modelled region. Half
of a Blender scene's rays may rightly pass through empty space to the background (the embedded
scene: 52 % at step 300 of a run that ends at 27.7 dB); a scene read outside its region loses all."""


class TrainingHealth:
    """Training PSNR over a flat colour's and the fraction of rays without samples, step by step; one
    warning at CHECK_AT_STEP when either says the scene is not where the model looks."""

    def __init__(self, label: str, region: str) -> None:
        self.label = label
        self.region = region
        self.steps = 0
        self.recent_psnrs: deque[float] = deque(maxlen=WINDOW)
        self.recent_flat_psnrs: deque[float] = deque(maxlen=WINDOW)
        self.recent_empty_fractions: deque[float] = deque(maxlen=WINDOW)
        self.warned = False

    def record(self, psnr: float, flat_colour_psnr: float, empty_ray_fraction: float) -> None:
        """A training step's PSNR, that of its batch's mean colour, and its share of rays without samples."""
        self.steps += 1
        self.recent_psnrs.append(psnr)
        self.recent_flat_psnrs.append(flat_colour_psnr)
        self.recent_empty_fractions.append(empty_ray_fraction)
        if self.steps == CHECK_AT_STEP:
            self.check()

    @property
    def gain_over_flat_colour(self) -> float:
        return fmean(self.recent_psnrs) - fmean(self.recent_flat_psnrs)

    @property
    def empty_ray_fraction(self) -> float:
        return fmean(self.recent_empty_fractions)

    def check(self) -> None:
        gain, empty = self.gain_over_flat_colour, self.empty_ray_fraction
        if gain >= MIN_GAIN_OVER_FLAT_DB and empty <= NEARLY_ALL_RAYS:
            return
        self.warned = True
        symptom = (f"{empty:.0%} of training rays meet no occupied cell" if empty > NEARLY_ALL_RAYS else
                   f"the training renders are only {gain:.1f} dB closer to the photos than one flat colour "
                   f"({fmean(self.recent_psnrs):.1f} against {fmean(self.recent_flat_psnrs):.1f} dB)")
        logger.warning(
            "%s: after %d steps %s: the scene likely lies outside the region the model covers (%s) -- read "
            "at the wrong scale or in the wrong format. Let the scene format be recognised from the folder "
            "(name no dataparser, or name bn-scene-data) and check the scene line it prints, or set "
            "--pipeline.model.collider-params.near-plane/far-plane and --pipeline.model.scene-contraction to fit it.",
            self.label, self.steps, symptom, self.region,
        )

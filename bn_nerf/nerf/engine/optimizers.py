"""nerfstudio's Adam with torch's fused kernel.

nerfstudio builds torch.optim.Adam with its defaults, which on a CPU update each parameter with one
kernel per arithmetic operation. bn-diner's table is millions of numbers updated every step: on
this project's 2-core CPU a step of Adam over a 96^3 x 8 table took 34 ms that way and 3 ms fused
(the whole bn-diner-cpu step about 145 ms). The update is the same Adam.
"""

from __future__ import annotations

from dataclasses import dataclass

from nerfstudio.engine.optimizers import AdamOptimizerConfig


@dataclass
class FusedAdamOptimizerConfig(AdamOptimizerConfig):
    fused: bool = True
    """Update each parameter in one fused pass (torch >= 2.4 on CPU, any CUDA)."""

"""The warnings our dependencies raise that no user of ours can act on, silenced one by one.

nerfstudio 1.1.5 under torch 2.14 (and the DataLoader's worker check on a small machine) prints
about sixteen deprecation warnings around a demo's one result line. Each filter below names one
warning by category, the start of its message and the module it is attributed to, so a warning
raised by bn_nerf's own code — or any upstream warning not listed — is still shown. Entry points
call `silence_known_upstream_warnings()` before importing nerfstudio (bn-nerf-demo, bn-inr); the
plugin package calls it too, which covers ns-train from the plugin's import on (warnings nerfstudio
raises while importing itself, before it loads plugins, still show there).
"""

from __future__ import annotations

import warnings

# (category, message prefix (a regular expression), module prefix (a regular expression), why).
KNOWN_UPSTREAM_WARNINGS: tuple[tuple[type[Warning], str, str, str], ...] = (
    (FutureWarning, r"`torch\.jit\.script` is deprecated", r"torch\.jit",
     "nerfstudio's camera_utils scripts functions at import; bn_nerf scripts none"),
    (FutureWarning, r"`torch\.cuda\.amp\.custom_(fwd|bwd)\(args\.\.\.\)` is deprecated", r"nerfstudio\.",
     "nerfstudio's activations decorate with torch's old AMP names"),
    (FutureWarning, r"`torch\.cuda\.amp\.GradScaler\(args\.\.\.\)` is deprecated", r"nerfstudio\.",
     "nerfstudio's trainer builds its grad scaler by the old name"),
    (UserWarning, r"Using a non-tuple sequence for multidimensional indexing is deprecated", r"nerfstudio\.",
     "nerfstudio's Cameras index with lists; torch gives the same result until it changes the rule"),
    (UserWarning, r"Converting a tensor with requires_grad=True to a scalar", r"nerfstudio\.",
     "nerfstudio's writer logs losses with float(); the value is right"),
    (UserWarning, r"This DataLoader will create \d+ worker processes in total", r"torch\.utils\.data",
     "nerfstudio's datamanager asks for 4 workers on any machine; bn_nerf builds no DataLoader"),
    (FutureWarning, r"Importing `spectral_angle_mapper` from `torchmetrics\.functional`", r"torchmetrics\.",
     "nerfstudio's models import SSIM from torchmetrics' deprecated root, which warns under another name"),
)


def silence_known_upstream_warnings() -> None:
    """Ignore each warning of KNOWN_UPSTREAM_WARNINGS for the rest of the process."""
    for category, message, module, _why in KNOWN_UPSTREAM_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)

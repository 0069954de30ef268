"""The MRI forward operator: a volume's orthonormal 3D Fourier coefficients at the sampled
k-space locations.

A = S F, with F the unitary DFT (`norm="ortho"`) and S keeping the coefficients a mask marks.
Its adjoint is A^H = F^H S^T (zero-fill, then inverse DFT), so A^H applied to the measurements is
the classical zero-filled reconstruction. Masks are given centred (zero frequency in the middle,
as they are drawn and shown) and shifted here to the DFT's layout.
"""

from __future__ import annotations

import torch


class FourierSampling:
    def __init__(self, centred_mask: torch.Tensor):
        mask = torch.as_tensor(centred_mask, dtype=torch.bool)
        if not mask.any():
            raise ValueError("the k-space mask samples no coefficient")
        self.shape = tuple(mask.shape)
        self.dims = tuple(range(-mask.dim(), 0))
        self.mask = torch.fft.ifftshift(mask, dim=self.dims)
        self.index = self.mask.reshape(-1).nonzero().squeeze(1)

    @property
    def measurement_count(self) -> int:
        return self.index.numel()

    def to(self, device: torch.device) -> "FourierSampling":
        self.mask, self.index = self.mask.to(device), self.index.to(device)
        return self

    def __call__(self, volume: torch.Tensor) -> torch.Tensor:
        """(..., *shape) real or complex -> (..., measurements) complex."""
        spectrum = torch.fft.fftn(volume, dim=self.dims, norm="ortho")
        return spectrum.reshape(*spectrum.shape[:-len(self.shape)], -1)[..., self.index]

    def adjoint(self, measurements: torch.Tensor) -> torch.Tensor:
        """(..., measurements) complex -> (..., *shape) complex."""
        leading = measurements.shape[:-1]
        spectrum = torch.zeros(*leading, self.mask.numel(), dtype=measurements.dtype, device=measurements.device)
        spectrum[..., self.index] = measurements
        return torch.fft.ifftn(spectrum.reshape(*leading, *self.shape), dim=self.dims, norm="ortho")

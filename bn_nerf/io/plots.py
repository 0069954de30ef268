"""Figures a user looks at: error maps, Fourier spectra (paper Fig. 3), rate-distortion curves (Fig. 2).

Every function takes plain arrays (numpy, or anything `np.asarray` accepts, such as CPU tensors)
and writes one PNG. Matplotlib is used through its object API with the Agg canvas, so nothing
depends on a display or on pyplot's global state.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def _save(figure: Figure, path: Path | str) -> None:
    FigureCanvasAgg(figure)
    figure.savefig(path, dpi=100, bbox_inches="tight")


def _grayscale(image) -> np.ndarray:
    """(H, W) or (H, W, C) -> (H, W) float64 by averaging channels."""
    pixels = np.asarray(image, dtype=np.float64)
    if pixels.ndim == 3:
        pixels = pixels.mean(axis=-1)
    if pixels.ndim != 2:
        raise ValueError(f"expected an (H, W) or (H, W, C) image, got shape {pixels.shape}")
    return pixels


def absolute_error(reconstruction, target) -> np.ndarray:
    """Per-pixel absolute error, averaged over channels: (H, W)."""
    reconstruction, target = np.asarray(reconstruction, dtype=np.float64), np.asarray(target, dtype=np.float64)
    if reconstruction.shape != target.shape:
        raise ValueError(f"reconstruction {reconstruction.shape} and target {target.shape} differ in shape")
    return _grayscale(np.abs(reconstruction - target))


def save_error_map(path: Path | str, reconstruction, target, title: str | None = None) -> None:
    """Absolute error |reconstruction - target| per pixel (mean over channels), with a colour bar.

    The colour scale runs from 0 to the largest error, so the map shows where the error sits
    whatever its size; the colour bar gives the values.
    """
    error = absolute_error(reconstruction, target)
    figure = Figure(figsize=(5, 4.2))
    axes = figure.add_subplot()
    shown = axes.imshow(error, cmap="inferno", vmin=0.0, vmax=max(float(error.max()), 1e-12))
    axes.set_axis_off()
    axes.set_title(title or f"absolute error (mean {error.mean():.4f}, max {error.max():.4f})", fontsize=9)
    figure.colorbar(shown, ax=axes, fraction=0.046, pad=0.04)
    _save(figure, path)


def log_magnitude_spectrum(image) -> np.ndarray:
    """log(1 + |FFT|) of the (channel-averaged) image, zero frequency at the centre."""
    return np.log1p(np.abs(np.fft.fftshift(np.fft.fft2(_grayscale(image)))))


def save_spectra(path: Path | str, images: Mapping[str, object]) -> None:
    """Log-magnitude Fourier spectra of several images side by side on one colour scale, as in
    the paper's Fig. 3, so that missing high frequencies show as a darker border."""
    spectra = {name: log_magnitude_spectrum(image) for name, image in images.items()}
    low = min(float(s.min()) for s in spectra.values())
    high = max(float(s.max()) for s in spectra.values())
    figure = Figure(figsize=(4 * len(spectra), 4.2))
    for index, (name, spectrum) in enumerate(spectra.items()):
        axes = figure.add_subplot(1, len(spectra), index + 1)
        axes.imshow(spectrum, cmap="viridis", vmin=low, vmax=high)
        axes.set_title(f"{name}: log(1 + |FFT|)", fontsize=9)
        axes.set_axis_off()
    _save(figure, path)


def _mean_curves(runs: Iterable[Mapping], rate_key: str, quality_key: str) -> dict[str, tuple[list[float], list[float]]]:
    """method -> (rates, mean quality at each rate), over the runs that carry both keys."""
    points: dict[str, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        if run.get(rate_key) not in (None, "") and run.get(quality_key) not in (None, ""):
            points[run["method"]][float(run[rate_key])].append(float(run[quality_key]))
    return {method: (sorted(by_rate), [float(np.mean(by_rate[rate])) for rate in sorted(by_rate)])
            for method, by_rate in sorted(points.items())}


def save_rate_distortion_plot(path: Path | str, runs: Iterable[Mapping], rate_key: str = "bpp_folded_32",
                              quality_key: str = "psnr", title: str | None = None,
                              file_rate_key: str = "bpp_file", file_quality_key: str = "psnr_file") -> None:
    """Quality against rate, one line per method (paper Fig. 2): the counted rate (solid) and, for
    runs that were also coded as a .bnr file, the file's real rate and decoded quality (dashed,
    same colour).

    Runs of the same method and rate (the same net size on several images) are averaged, as the
    paper averages over the Kodak images.
    """
    runs = list(runs)
    figure = Figure(figsize=(6, 4.5))
    axes = figure.add_subplot()
    file_curves = _mean_curves(runs, file_rate_key, file_quality_key)
    for method, (rates, quality) in _mean_curves(runs, rate_key, quality_key).items():
        (line,) = axes.plot(rates, quality, marker="o", label=method)
        if method in file_curves:
            axes.plot(*file_curves[method], marker="s", linestyle="--", color=line.get_color(),
                      label=f"{method}, .bnr file")
    axes.set_xlabel(rate_key.replace("_", " ") + (f" (solid), {file_rate_key.replace('_', ' ')} (dashed)"
                                                  if file_curves else "") + " (bits per pixel)")
    axes.set_ylabel(quality_key.upper() + (" (dB)" if quality_key == "psnr" else ""))
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=8)
    if title:
        axes.set_title(title, fontsize=9)
    _save(figure, path)

"""Entropy coding of quantized tensors with `constriction`'s ANS coder: one function pair,
`encode_tensors` / `decode_tensors`.

The model is parametric, one per tensor: a quantized Laplace or a quantized Gaussian, whichever
codes the tensor in fewer bits, with its location and scale fitted to the tensor's symbols. Why
parametric and not a categorical table in the header: the networks are small (a few thousand
weights) and their weights peaked around zero, so a table of up to 2^bits frequencies per tensor
would cost more header than the model mismatch costs payload, while two float16 numbers describe
either distribution. The parameters are rounded to float16 before coding, the precision the header
stores them in, so that the decoder's model is the encoder's to the bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import constriction
import numpy as np

from bn_nerf.codec.quantize import symbol_limit

# Family codes as stored in the file: never renumber one, only add.
LAPLACE, GAUSSIAN = 0, 1
FAMILIES = (LAPLACE, GAUSSIAN)
# The probability resolution of constriction's default ANS coder and its leaky quantized models.
CODER_PROBABILITY_BITS = 24
# A scale floor, in symbols: a constant tensor would otherwise fit a zero scale, which no model takes.
MINIMUM_SCALE = 0.0625


@dataclass(frozen=True)
class TensorModel:
    """A tensor's entropy model: family code, location and scale in units of symbols."""

    family: int
    location: float
    scale: float


def _as_float16(value: float) -> float:
    return float(np.float16(value))


def _model(model: TensorModel, bits: int):
    limit = symbol_limit(bits)
    family = (constriction.stream.model.QuantizedLaplace if model.family == LAPLACE
              else constriction.stream.model.QuantizedGaussian)
    return family(-limit, limit, model.location, model.scale)


def _fitted(symbols: np.ndarray, family: int) -> TensorModel:
    values = symbols.astype(np.float64)
    location = float(np.median(values)) if family == LAPLACE else float(values.mean())
    # Maximum-likelihood scales: mean absolute deviation from the median (Laplace), standard deviation (Gaussian).
    spread = np.abs(values - location).mean() if family == LAPLACE else values.std()
    return TensorModel(family, _as_float16(location), _as_float16(max(float(spread), MINIMUM_SCALE)))


def _coded_bits(symbols: np.ndarray, model: TensorModel, bits: int) -> int:
    coder = constriction.stream.stack.AnsCoder()
    coder.encode_reverse(symbols, _model(model, bits))
    return coder.num_bits()


def encode_tensors(tensors: list[np.ndarray], bits: int) -> tuple[list[TensorModel], bytes]:
    """Each tensor's model and one ANS stream of all their int32 symbols (little-endian 32-bit
    words). Decoding needs the models, each tensor's symbol count and `bits`."""
    models = [min((_fitted(symbols, family) for family in FAMILIES),
                  key=lambda model: _coded_bits(symbols, model, bits)) for symbols in tensors]
    coder = constriction.stream.stack.AnsCoder()
    # A stack: the last tensor in goes first, so that the decoder reads the tensors in order.
    for symbols, model in reversed(list(zip(tensors, models))):
        coder.encode_reverse(symbols, _model(model, bits))
    return models, coder.get_compressed().astype("<u4").tobytes()


def decode_tensors(payload: bytes, models: list[TensorModel], counts: list[int], bits: int) -> list[np.ndarray]:
    """The int32 symbols of each tensor, in the order they were encoded. The caller has checked the
    payload's integrity (a checksum): ANS decodes any words into some symbols."""
    coder = constriction.stream.stack.AnsCoder(np.frombuffer(payload, dtype="<u4").astype(np.uint32))
    return [np.asarray(coder.decode(_model(model, bits), count), dtype=np.int32)
            for model, count in zip(models, counts)]


def model_information_bits(tensors: list[np.ndarray], models: list[TensorModel], bits: int) -> float:
    """The entropy estimate of a payload: each symbol's information content -log2 p under its
    tensor's model (the quantized density over unit bins, renormalized over the symbol range),
    summed -- what an ideal coder with these models would write; ANS should come within a word."""
    # Imported here: scipy.stats takes about a second to import, and decoding never needs it.
    import scipy.stats

    limit = symbol_limit(bits)
    edges = np.arange(-limit, limit + 2) - 0.5
    total = 0.0
    for symbols, model in zip(tensors, models, strict=True):
        distribution = (scipy.stats.laplace(model.location, model.scale) if model.family == LAPLACE
                        else scipy.stats.norm(model.location, model.scale))
        masses = np.diff(distribution.cdf(edges))
        # constriction's leaky quantizer gives every symbol in range at least one unit of its
        # 2^-24 probability resolution; without that floor a far-tail symbol would count as
        # infinitely many bits here while the coder writes it in about 24.
        probabilities = np.maximum(masses / masses.sum(), 2.0 ** -CODER_PROBABILITY_BITS)
        probabilities /= probabilities.sum()
        total += float(-np.log2(probabilities[symbols + limit]).sum())
    return total


def information_bits(tensors: list[np.ndarray]) -> float:
    """The empirical zero-order entropy of every tensor's symbols, summed: the bits an ideal coder
    that knew each tensor's own symbol frequencies for free would spend; the gap to the model's
    estimate is what fitting a two-number model costs."""
    total = 0.0
    for symbols in tensors:
        _, counts = np.unique(symbols, return_counts=True)
        probabilities = counts / counts.sum()
        total += float(-(counts * np.log2(probabilities)).sum())
    return total

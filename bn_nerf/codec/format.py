"""The `.bnr` file: a small versioned header, the entropy-coded weights, a checksum.

Layout, little-endian (format version 1):

    magic          4 bytes  b"\\x89BNR" (a high first byte, as PNG's, so a text-mode copy shows)
    version        uint8
    height, width  uint16 each, the image's pixels
    channels       uint8    1 (gray) or 3 (RGB)
    depth, hidden  uint16 each, the network's hidden layers and features per layer
    bits           uint8    the quantization bit depth every tensor's symbols lie within
    tensor count   uint16
    config length  uint16   bytes of the network configuration that follows
    payload length uint32   bytes of the coded weights
    config         JSON: the NetworkConfig fields that differ from NetworkConfig's defaults
    per tensor     uint8 model family, float16 step, float16 model location, float16 model scale
    payload        the ANS stream, whole 32-bit words
    checksum       CRC32 of every byte before it

The lengths up front let a reader tell a truncated file from a corrupted one before it checks the
CRC. A new layout gets a new version number; a reader refuses versions it does not know.
"""

from __future__ import annotations

import dataclasses
import json
import struct
import zlib
from dataclasses import dataclass

import numpy as np

from bn_nerf.codec.entropy import FAMILIES, TensorModel
from bn_nerf.codec.quantize import BIT_DEPTHS
from bn_nerf.io.errors import InputError
from bn_nerf.networks import NetworkConfig

MAGIC = b"\x89BNR"
FORMAT_VERSION = 1
_FIXED = struct.Struct("<4sBHHBHHBHHI")
_TENSOR = struct.Struct("<Beee")
_CHECKSUM = struct.Struct("<I")
# The largest image side the header's uint16 fields hold.
MAX_SIDE = 2 ** 16 - 1


@dataclass(frozen=True)
class CodedImage:
    """Everything a `.bnr` file holds, decoded from or ready for bytes."""

    height: int
    width: int
    channels: int
    depth: int
    hidden_width: int
    bits: int
    network: NetworkConfig
    steps: tuple[float, ...]
    models: tuple[TensorModel, ...]
    payload: bytes

    @property
    def pixel_count(self) -> int:
        return self.height * self.width


def _config_json(config: NetworkConfig) -> bytes:
    defaults = dataclasses.asdict(NetworkConfig())
    changed = {key: value for key, value in dataclasses.asdict(config).items() if value != defaults[key]}
    return json.dumps(changed, separators=(",", ":"), sort_keys=True).encode()


def _config_from_json(text: bytes, label: str) -> NetworkConfig:
    try:
        fields = json.loads(text.decode())
        if not isinstance(fields, dict):
            raise ValueError("not a JSON object")
        # JSON has no tuples: the one tuple field comes back as a list.
        fields = {key: tuple(value) if isinstance(value, list) else value for key, value in fields.items()}
        return NetworkConfig().replace(**fields).validate()
    except (UnicodeDecodeError, ValueError, TypeError) as error:
        raise InputError(f"{label}: the header's network configuration is unreadable ({error})") from None


def pack(coded: CodedImage) -> bytes:
    """The file's bytes."""
    config = _config_json(coded.network)
    body = _FIXED.pack(MAGIC, FORMAT_VERSION, coded.height, coded.width, coded.channels, coded.depth,
                       coded.hidden_width, coded.bits, len(coded.steps), len(config), len(coded.payload))
    body += config + b"".join(_TENSOR.pack(model.family, step, model.location, model.scale)
                              for step, model in zip(coded.steps, coded.models, strict=True))
    body += coded.payload
    return body + _CHECKSUM.pack(zlib.crc32(body))


def header_size(coded: CodedImage) -> int:
    """Bytes of the file that are not coded weights (header and checksum)."""
    return len(pack(dataclasses.replace(coded, payload=b"")))


def unpack(data: bytes, label: str) -> CodedImage:
    """A file's bytes, checked (magic, version, lengths, checksum) and parsed; every problem is an
    InputError naming `label` and the problem."""
    if not data:
        raise InputError(f"{label}: empty file")
    if not data.startswith(MAGIC[: len(data)]):
        raise InputError(f"{label}: not a bn-nerf image file (wrong magic bytes)")
    if len(data) < _FIXED.size:
        raise InputError(f"{label}: truncated ({len(data)} bytes, shorter than the {_FIXED.size}-byte header)")
    (_, version, height, width, channels, depth, hidden_width, bits, tensor_count,
     config_length, payload_length) = _FIXED.unpack_from(data)
    if version != FORMAT_VERSION:
        raise InputError(f"{label}: unknown format version {version} (this decoder reads version {FORMAT_VERSION})")
    tensors_at = _FIXED.size + config_length
    payload_at = tensors_at + tensor_count * _TENSOR.size
    expected = payload_at + payload_length + _CHECKSUM.size
    if len(data) < expected:
        raise InputError(f"{label}: truncated ({len(data)} of {expected} bytes)")
    if len(data) > expected:
        raise InputError(f"{label}: {len(data) - expected} bytes past the end of the coded image")
    (checksum,) = _CHECKSUM.unpack_from(data, expected - _CHECKSUM.size)
    if zlib.crc32(data[: expected - _CHECKSUM.size]) != checksum:
        raise InputError(f"{label}: checksum mismatch (the file is corrupted)")
    # The checksum held, so what follows is what an encoder wrote; these checks guard against an
    # encoder of this version that wrote something this decoder cannot take.
    if channels not in (1, 3) or bits not in BIT_DEPTHS or payload_length % 4 or min(height, width) < 1:
        raise InputError(f"{label}: unsupported header ({width}x{height}x{channels}, {bits} bits)")
    network = _config_from_json(data[_FIXED.size: tensors_at], label)
    tensors = [_TENSOR.unpack_from(data, tensors_at + index * _TENSOR.size) for index in range(tensor_count)]
    if any(family not in FAMILIES or not np.isfinite([step, location, scale]).all() or step <= 0 or scale <= 0
           for family, step, location, scale in tensors):
        raise InputError(f"{label}: unsupported entropy model or step in the header")
    return CodedImage(height, width, channels, depth, hidden_width, bits, network,
                      steps=tuple(float(step) for _, step, _, _ in tensors),
                      models=tuple(TensorModel(family, float(location), float(scale)) for family, _, location, scale in tensors),
                      payload=bytes(data[payload_at: payload_at + payload_length]))

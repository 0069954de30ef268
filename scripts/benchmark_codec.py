"""Rate-distortion of the .bnr codec against JPEG, WebP and AVIF (Pillow), in real bytes.

    .venv/bin/python scripts/benchmark_codec.py data/kodak/kodim0{1,2,3,4}.png --downscale 2 \\
        --sizes 3x16 5x20 5x30 10x28 --iterations 2000 --out results/benchmark-codec

For each photo x method x net size it runs `bn-inr encode` (the same protocol for every method:
`bn-inr image`'s iterations, learning rates and iterate rule, the codec's default bit depth, and the
same --qat-steps), decodes the file with `bn-inr decode`'s code, and records PSNR on RGB in [0, 1]
and bits per pixel = file bytes x 8 / pixels, header included, against the photo as the classical
codecs see it (downscaled, 8-bit). Each photo is also swept through JPEG, WebP and AVIF qualities,
and each of our points gets their PSNR interpolated at its bits per pixel ("at matching bytes").

Per point it also records the issue's targets: (1) the file's size against its entropy estimate
(the header plus each weight's information content under the file's entropy models) and (2) the
decode time on one thread (best of 3).

`--from-runs DIR` codes the networks a `bn-inr image --methods ... --sizes ...` run already kept
(DIR/.../<photo>/<method>_<size>/network.pt, rebuilt through bn_nerf.networks and BN-folded exactly
as `bn-inr encode` folds its own fit) instead of fitting again: the same coding, the training paid
once. Their iterations must equal --iterations, so one folder still holds one protocol.

Resumable: every finished point is appended to OUT/points.csv at once, and a rerun skips the
points already there, so a long run may be stopped and continued. OUT/summary.md and
OUT/rate_distortion.png are rewritten from the whole CSV at the end of every run. One folder holds
one protocol (iterations, --qat-steps, --bits, --downscale): another is refused, so give it its own --out.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from bn_nerf.codec.compress import encode_network, entropy_estimates, psnr_uint8
from bn_nerf.codec.decode import IN_DIM, decode_file, read_coded_image
from bn_nerf.networks import build_network, fold_normalization
from bn_nerf.runtime import cpu_model
from bn_nerf.tasks.image import downscaled
from bn_nerf.tasks.trainer import METRICS_FILE, NETWORK_FILE
from bn_nerf.io.images import load_image

METHODS = ("bn+pe", "pe", "bn", "relu", "siren")
CLASSICAL = ("jpeg", "webp", "avif")
# Qualities dense at the low end, where the comparison with small networks happens.
QUALITIES = (1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 25, 30, 40, 50, 60, 70, 80, 90, 95)
# Published Kodak means (all 24 photos at full size, 768x512) that the plot carries over as cited
# points, not measured here: on downscaled photos every codec's PSNR at a given bpp is lower, so
# they place the field, they are not a comparison at equal inputs.
CITED = {
    # COIN (Dupont et al., 2021): github.com/EmilienDupont/coin, results.json at 5a8d310.
    "COIN (published, full-size Kodak)": ((0.0368, 22.408), (0.07361, 23.205), (0.1604, 24.641),
                                           (0.3074, 26.412), (0.6109, 28.408), (1.209, 30.644)),
    # Cool-chic (Ladune et al., 2023): github.com/Orange-OpenSource/Cool-Chic,
    # results/kodak/average_results.tsv at 22df0f4.
    "Cool-chic (published, full-size Kodak)": ((0.0812, 25.318), (0.2651, 29.108), (0.9239, 35.702),
                                               (1.7493, 40.736)),
}
COLUMNS = ("photo", "codec", "setting", "bytes", "bpp", "psnr", "bits", "bits_asked", "header_bytes",
           "entropy_estimate_bytes", "empirical_entropy_bytes", "size_over_estimate", "decode_seconds",
           "encode_seconds", "iterations", "qat_steps", "downscale")


def reference_pixels(photo: Path, factor: int) -> np.ndarray:
    """The photo as every codec is judged against it: downscaled as `bn-inr encode` does, 8-bit."""
    return np.round(downscaled(load_image(photo), factor, photo.stem) * 255).astype(np.uint8)


def classical_point(pixels: np.ndarray, codec: str, quality: int) -> tuple[int, np.ndarray]:
    """(bytes, decoded pixels) of Pillow's `codec` at `quality`."""
    buffer = io.BytesIO()
    image = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)
    image.save(buffer, format=codec.upper(), quality=quality)
    decoded = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert(image.mode))
    return buffer.tell(), decoded.reshape(pixels.shape)


def coded_file_path(out: Path, photo: Path, method: str, size: str) -> Path:
    path = out / "files" / f"{photo.stem}_{method}_{size}.bnr"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def encoded_by_command(photo: Path, method: str, size: str, args: argparse.Namespace) -> tuple[Path, float]:
    """`bn-inr encode` fits and codes the photo: (the file, seconds it took)."""
    depth, width = size.lower().split("x")
    coded_path = coded_file_path(args.out, photo, method, size)
    command = [sys.executable, "-m", "bn_nerf.cli", "encode", str(photo), str(coded_path), "--method", method,
               "--depth", depth, "--width", width, "--iterations", str(args.iterations), "--downscale",
               str(args.downscale), "--threads", str(args.threads), "--qat-steps", str(args.qat_steps), "--quiet",
               *(["--bits", str(args.bits)] if args.bits else [])]
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return coded_path, time.perf_counter() - started


def kept_run_folder(runs: Path, photo: Path, method: str, size: str) -> Path | None:
    """The folder `bn-inr image` wrote for this photo, method and size under `runs`, if any."""
    matches = [path.parent for path in runs.rglob(f"{method}_{size}/{NETWORK_FILE}") if path.parent.parent.name == photo.stem]
    if len(matches) > 1:
        sys.exit(f"{runs}: {len(matches)} runs of {photo.stem} {method} {size}; keep one")
    return matches[0] if matches else None


def encoded_from_run(run: Path, photo: Path, method: str, size: str, args: argparse.Namespace,
                     pixels: np.ndarray) -> tuple[Path, float]:
    """Code the network a `bn-inr image` run kept: (the file, training plus coding seconds)."""
    metrics = json.loads((run / METRICS_FILE).read_text())
    if metrics["iterations"] != args.iterations:
        sys.exit(f"{run}: trained {metrics['iterations']} iterations, not --iterations {args.iterations}")
    state = torch.load(run / NETWORK_FILE, map_location="cpu")
    spec = state["spec"]
    net = build_network(spec["method"], IN_DIM, pixels.shape[-1], spec["depth"], spec["width"], **spec["overrides"])
    net.load_state_dict(state["network"])
    started = time.perf_counter()
    encoded = encode_network(fold_normalization(net.eval()), pixels / 255.0, bits=args.bits)
    coded_path = coded_file_path(args.out, photo, method, size)
    coded_path.write_bytes(encoded.data)
    return coded_path, metrics["seconds"] + time.perf_counter() - started


def codec_point(coded_path: Path, encode_seconds: float, args: argparse.Namespace, pixels: np.ndarray) -> dict:
    """The measured figures of one .bnr file against the photo's pixels."""
    decode_times = []
    for _ in range(3):
        started = time.perf_counter()
        decoded = decode_file(coded_path)
        decode_times.append(time.perf_counter() - started)
    file_bytes = coded_path.stat().st_size
    coded = read_coded_image(coded_path)
    estimates = entropy_estimates(coded, file_bytes - len(coded.payload))
    return {"bytes": file_bytes,
            "psnr": psnr_uint8(decoded, pixels / 255.0), "bits": coded.bits,
            "header_bytes": file_bytes - len(coded.payload), **estimates,
            "size_over_estimate": file_bytes / estimates["entropy_estimate_bytes"],
            "decode_seconds": min(decode_times), "encode_seconds": encode_seconds,
            "iterations": args.iterations, "qat_steps": args.qat_steps, "bits_asked": args.bits or "auto"}


def read_points(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def mean_curves(points: list[dict]) -> dict[str, list[tuple[float, float]]]:
    """codec -> [(mean bpp, mean PSNR)] per setting, over the photos, sorted by rate."""
    grouped: dict[str, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for point in points:
        grouped[point["codec"]][point["setting"]].append(point)
    return {codec: sorted((float(np.mean([float(p["bpp"]) for p in group])), float(np.mean([float(p["psnr"]) for p in group])))
                          for group in settings.values())
            for codec, settings in sorted(grouped.items())}


def classical_psnr_at(points: list[dict], photo: str, codec: str, bpp: float) -> float:
    """The classical codec's PSNR on `photo` interpolated at `bpp` (NaN outside its swept range)."""
    sweep = classical_sweep(points, photo, codec)
    rates = [rate for rate, _ in sweep]
    if not sweep or not rates[0] <= bpp <= rates[-1]:
        return float("nan")
    return float(np.interp(bpp, rates, [psnr for _, psnr in sweep]))


def classical_sweep(points: list[dict], photo: str, codec: str) -> list[tuple[float, float]]:
    return sorted((float(p["bpp"]), float(p["psnr"])) for p in points if p["photo"] == photo and p["codec"] == codec)


def ahead_of_classical(points: list[dict], point: dict, codec: str) -> bool | None:
    """Whether our file beats the classical codec at equal or fewer bytes on its photo: higher PSNR
    than the codec's interpolated at our rate; or, below the codec's lowest rate (JPEG cannot make a
    file as small as a 5x20 net's at quality 1), higher PSNR than its smallest file, which is larger.
    None where the sweep cannot say (ours below its range and worse than its smallest file, or above
    its range)."""
    bpp, psnr = float(point["bpp"]), float(point["psnr"])
    sweep = classical_sweep(points, point["photo"], codec)
    if not sweep:
        return None
    at_our_rate = classical_psnr_at(points, point["photo"], codec, bpp)
    if np.isfinite(at_our_rate):
        return psnr > at_our_rate
    smallest_bpp, smallest_psnr = sweep[0]
    if bpp < smallest_bpp:
        return True if psnr > smallest_psnr else None
    return None


def write_reports(points: list[dict], out: Path, title: str) -> None:
    figure = Figure(figsize=(7, 5))
    axes = figure.add_subplot()
    for codec, curve in mean_curves(points).items():
        axes.plot(*zip(*curve), marker="o" if codec.startswith("bnr:") else ".",
                  linestyle="-" if codec.startswith("bnr:") else "--", label=codec)
    for name, curve in CITED.items():
        axes.plot(*zip(*curve), marker="x", linestyle=":", color="tab:olive" if name.startswith("COIN") else "black",
                  label=name)
    axes.set_xlabel("bits per pixel (file bytes x 8 / pixels)")
    axes.set_ylabel("PSNR (dB), RGB in [0, 1]")
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=8)
    axes.set_title(title, fontsize=9)
    FigureCanvasAgg(figure)
    figure.savefig(out / "rate_distortion.png", dpi=100, bbox_inches="tight")

    ours = [p for p in points if p["codec"].startswith("bnr:")]
    lines = [f"# .bnr rate-distortion ({title})", "",
             "Means over photos. \"vs X\": our PSNR minus X's, interpolated on each photo at our file's bpp "
             "(mean over the photos X's sweep reaches, their count in brackets), then on how many photos our file "
             "beats X at equal or fewer bytes (below X's lowest rate: beating X's smallest file, which is larger).", "",
             "| codec | size | photos | bpp | PSNR | " + " | ".join(f"vs {c}" for c in CLASSICAL)
             + " | bits | file / estimate (max) | decode s (max) |",
             "|" + "---|" * (9 + len(CLASSICAL) - 1)]
    grouped: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for point in ours:
        grouped[point["codec"], point["setting"]].append(point)
    for (codec, size), group in sorted(grouped.items()):
        comparisons = []
        for classical in CLASSICAL:
            gaps = [float(p["psnr"]) - classical_psnr_at(points, p["photo"], classical, float(p["bpp"])) for p in group]
            reached = [gap for gap in gaps if np.isfinite(gap)]
            verdicts = [ahead_of_classical(points, p, classical) for p in group]
            gap = f"{np.mean(reached):+.2f} dB ({len(reached)})" if reached else "n/a (0)"
            comparisons.append(f"{gap}, ahead {sum(v is True for v in verdicts)}/{len(group)}")
        lines.append(f"| {codec} | {size} | {len(group)} | {np.mean([float(p['bpp']) for p in group]):.3f} | "
                     f"{np.mean([float(p['psnr']) for p in group]):.2f} | " + " | ".join(comparisons)
                     + f" | {'/'.join(sorted({p['bits'] for p in group}))} | "
                       f"{max(float(p['size_over_estimate']) for p in group):.4f} | "
                       f"{max(float(p['decode_seconds']) for p in group):.3f} |")
    (out / "summary.md").write_text("\n".join(lines) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("photos", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=Path("outputs/benchmark-codec"))
    parser.add_argument("--downscale", type=int, default=2)
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--sizes", nargs="+", default=["3x16", "5x20", "5x30", "10x28"],
                        help="net sizes DEPTHxWIDTH, one rate each")
    parser.add_argument("--iterations", type=int, default=2000, help="training iterations of every encode")
    parser.add_argument("--qat-steps", type=int, default=0)
    parser.add_argument("--bits", type=int,
                        help="quantization bits of every encode (default: `bn-inr encode`'s automatic choice)")
    parser.add_argument("--threads", type=int, default=1, help="threads of each encode (decode runs on one)")
    parser.add_argument("--from-runs", type=Path, metavar="DIR",
                        help="code the networks `bn-inr image` kept under DIR instead of fitting again")
    args = parser.parse_args()
    if args.from_runs and args.qat_steps:
        parser.error("--qat-steps fine-tunes during `bn-inr encode`; it does not apply to --from-runs")
    args.out.mkdir(parents=True, exist_ok=True)
    csv_path = args.out / "points.csv"
    points = read_points(csv_path)
    protocol = {"iterations": str(args.iterations), "qat_steps": str(args.qat_steps),
                "bits_asked": str(args.bits or "auto"), "downscale": str(args.downscale)}
    # One folder, one protocol: the summary averages every point of a codec and net size.
    others = {tuple(p[key] for key in protocol) for p in points if p["codec"].startswith("bnr:")} - {tuple(protocol.values())}
    if others or any(p["downscale"] != protocol["downscale"] for p in points):
        sys.exit(f"{csv_path}: holds points of another protocol ({', '.join(protocol)} = {sorted(others)}); "
                 f"use another --out")
    done = {(p["photo"], p["codec"], p["setting"]) for p in points}
    torch.set_num_threads(1)
    new_file = not csv_path.is_file()
    with csv_path.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        if new_file:
            writer.writeheader()

        def record(row: dict) -> None:
            writer.writerow(row)
            handle.flush()
            points.append({key: str(value) for key, value in row.items()})
            print(", ".join(f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}"
                            for key, value in row.items() if key in ("photo", "codec", "setting", "bpp", "psnr",
                                                                     "size_over_estimate", "decode_seconds",
                                                                     "encode_seconds")), flush=True)

        for photo in args.photos:
            pixels = reference_pixels(photo, args.downscale)
            pixel_count = pixels.shape[0] * pixels.shape[1]
            common = {"photo": photo.stem, "downscale": args.downscale}
            for codec in CLASSICAL:
                for quality in QUALITIES:
                    if (photo.stem, codec, str(quality)) in done:
                        continue
                    size, decoded = classical_point(pixels, codec, quality)
                    record({**common, "codec": codec, "setting": quality, "bytes": size, "bpp": size * 8 / pixel_count,
                            "psnr": psnr_uint8(decoded, pixels / 255.0)})
            for size in args.sizes:
                for method in args.methods:
                    if (photo.stem, f"bnr:{method}", size) in done:
                        continue
                    if args.from_runs:
                        run = kept_run_folder(args.from_runs, photo, method, size)
                        if run is None:
                            continue  # not trained (yet): a rerun codes it once it is
                        coded_path, encode_seconds = encoded_from_run(run, photo, method, size, args, pixels)
                    else:
                        coded_path, encode_seconds = encoded_by_command(photo, method, size, args)
                    point = codec_point(coded_path, encode_seconds, args, pixels)
                    record({**common, "codec": f"bnr:{method}", "setting": size, **point,
                            "bpp": point["bytes"] * 8 / pixel_count})
    write_reports(points, args.out, f"{len(args.photos)} photo(s), downscale {args.downscale}, "
                                    f"{args.iterations} iterations, {cpu_model()}")
    print(f"{len(points)} points -> {csv_path}, {args.out / 'summary.md'}, {args.out / 'rate_distortion.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The CPU goal investigation (issue 10): where the first mask's time goes, per segmenter, on the raw
models (random weights, the released architectures), and the same vision encoder through ONNX Runtime.

`python -m benchmarks.cpu_goal [--models edgetam sam2.1-tiny] [--runs 3] [--threads 2] [--onnx]
[--compile] [--json FILE]` prints one row per measurement. The first-mask path is the product's: the
12 MP photo resized to the model's 1024x1024 input and normalised, the vision encoder, one click's
decode, and the low-resolution mask upscaled to the photo's size and thresholded.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.bench import synthetic_photo
from benchmarks.bench_models import build_edgetam, build_sam2

SIDE = 1024  # SAM 2 and EdgeTAM work on a 1024x1024 square (no padding: the photo is stretched)
MEAN = np.array([0.485, 0.456, 0.406], np.float32) * 255
STD = np.array([0.229, 0.224, 0.225], np.float32) * 255


def build(name: str) -> Any:
    return build_edgetam() if name == "edgetam" else build_sam2(name.removeprefix("sam2.1-"))


def pixel_values(photo: np.ndarray) -> torch.Tensor:
    """The photo (`HxWx3 uint8`) as the model's normalised `1x3x1024x1024 float32` input."""
    import cv2

    small = cv2.resize(photo, (SIDE, SIDE), interpolation=cv2.INTER_AREA).astype(np.float32)
    return torch.from_numpy(((small - MEAN) / STD).transpose(2, 0, 1)[None].copy())


def decode(model: Any, embeddings: list[torch.Tensor], x: float, y: float, width: int, height: int) -> np.ndarray:
    """One positive click at photo pixel (x, y): the 256x256 mask logits (`float32`)."""
    point = torch.tensor([[[[x * SIDE / width, y * SIDE / height]]]], dtype=torch.float32)
    out = model(image_embeddings=embeddings, input_points=point, input_labels=torch.ones(1, 1, 1, dtype=torch.long),
                multimask_output=False)
    return out.pred_masks[0, 0, 0].numpy()


def upscale(logits: np.ndarray, width: int, height: int) -> np.ndarray:
    """The low-resolution logits as the photo's `HxW uint8` mask (255 = selected)."""
    import cv2

    # cv2.threshold on the float logits, then one cast: about half the time of `np.where(big > 0, ...)`
    # on 12 MP, and the same mask.
    big = cv2.resize(logits, (width, height), interpolation=cv2.INTER_LINEAR)
    return cv2.threshold(big, 0, 255, cv2.THRESH_BINARY)[1].astype(np.uint8)


def median_time(work: Callable[[], Any], runs: int) -> tuple[float, Any]:
    """One warm-up run, then the median of `runs` timed runs, and the last result."""
    result = work()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        result = work()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


class Rows:
    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def add(self, name: str, value: float, unit: str, **settings: Any) -> None:
        self.rows.append({"name": name, "value": value, "unit": unit, "settings": settings})
        shown = ", ".join(f"{k}={v}" for k, v in settings.items())
        print(f"{name:<28} {value:>10.3g} {unit:<3} {shown}", flush=True)


def measure_path(name: str, model: Any, runs: int, rows: Rows, **extra: Any) -> list[torch.Tensor]:
    """Each step of the first-mask path on a 4000x3000 photo, and their sum."""
    photo = synthetic_photo(4000, 3000)
    height, width = photo.shape[:2]
    common = dict(model=name, threads=torch.get_num_threads(), **extra)
    with torch.inference_mode():
        resize_s, pixels = median_time(lambda: pixel_values(photo), runs)
        encode_s, embeddings = median_time(lambda: model.get_image_embeddings(pixels), runs)
        decode_s, logits = median_time(lambda: decode(model, embeddings, 1400, 1350, width, height), max(runs, 5))
    upscale_s, _ = median_time(lambda: upscale(logits, width, height), max(runs, 5))
    rows.add("resize_normalise_s", resize_s, "s", **common)
    rows.add("encoder_1024_s", encode_s, "s", **common)
    rows.add("decode_ms", decode_s * 1000, "ms", **common)
    rows.add("upscale_mask_12mp_ms", upscale_s * 1000, "ms", **common)
    rows.add("first_mask_s", resize_s + encode_s + decode_s + upscale_s, "s", note="sum of the steps", **common)
    rows.add("click_ms", (decode_s + upscale_s) * 1000, "ms", note="decode + upscale", **common)
    return embeddings


class _Encoder(torch.nn.Module):
    """The vision encoder alone, returning its three feature maps as a tuple (ONNX export)."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.model.get_image_embeddings(pixels))


class _Decoder(torch.nn.Module):
    """Prompt encoder and mask decoder: the three feature maps and the clicks in, the 256x256 logits out."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(self, high: torch.Tensor, mid: torch.Tensor, low: torch.Tensor, points: torch.Tensor,
                labels: torch.Tensor) -> torch.Tensor:
        out = self.model(image_embeddings=[high, mid, low], input_points=points, input_labels=labels,
                         multimask_output=False)
        return out.pred_masks[:, 0, 0]


def measure_onnx_decoder(name: str, model: Any, runs: int, rows: Rows, folder: Path,
                         embeddings: list[torch.Tensor]) -> None:
    """The first click's decoder exported from the same weights (one point: a traced graph fixes the
    number of points, so a product would export one graph per count or pad), beside PyTorch's."""
    import onnxruntime as ort

    path = folder / f"{name}-decoder.onnx"
    points = torch.tensor([[[[358.4, 460.8]]]])
    labels = torch.tensor([[[1]]], dtype=torch.long)
    # Exported from a copy (same seed, same weights): once traced, a model's eager output differs.
    with torch.inference_mode():
        torch_s, reference = median_time(lambda: _Decoder(model)(*embeddings, points, labels), max(runs, 5))
    with torch.no_grad():
        torch.onnx.export(_Decoder(build(name)), (*embeddings, points, labels), str(path),
                          input_names=["high", "mid", "low", "points", "labels"], output_names=["logits"],
                          opset_version=17, dynamo=False)
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feed = {"high": embeddings[0].numpy(), "mid": embeddings[1].numpy(), "low": embeddings[2].numpy(),
            "points": points.numpy(), "labels": labels.numpy()}
    seconds, (logits,) = median_time(lambda: session.run(None, feed), max(runs, 5))
    error = float(np.abs(logits - reference.numpy()).max() / (np.abs(reference.numpy()).max() + 1e-9))
    common = dict(model=name, threads=torch.get_num_threads())
    rows.add("decode_ms", torch_s * 1000, "ms", runtime="torch eager fp32 (same run)", **common)
    rows.add("decode_ms", seconds * 1000, "ms", runtime=f"onnxruntime {ort.__version__}", **common)
    rows.add("onnx_decoder_max_rel_error", error, "", **common)


def measure_onnx(name: str, model: Any, runs: int, rows: Rows, folder: Path,
                 reference: list[torch.Tensor]) -> None:
    """The vision encoder exported from the same weights (a copy: tracing changes the traced
    model), run by ONNX Runtime on the same threads; the two runtimes timed in turn, so that a
    change in the machine's load falls on both."""
    import onnxruntime as ort

    path = folder / f"{name}-encoder.onnx"
    pixels = pixel_values(synthetic_photo(4000, 3000))
    started = time.perf_counter()
    with torch.no_grad():  # the TorchScript exporter traces; inference tensors cannot be traced
        torch.onnx.export(_Encoder(build(name)), (pixels,), str(path), input_names=["pixel_values"],
                          output_names=["high", "mid", "low"], opset_version=17, dynamo=False)
    export_s = time.perf_counter() - started
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feed = {"pixel_values": pixels.numpy()}
    outputs = session.run(None, feed)  # warm-up
    torch_times, onnx_times = [], []
    for _ in range(runs):
        with torch.inference_mode():
            started = time.perf_counter()
            model.get_image_embeddings(pixels)
            torch_times.append(time.perf_counter() - started)
        started = time.perf_counter()
        outputs = session.run(None, feed)
        onnx_times.append(time.perf_counter() - started)
    error = max(float(np.abs(o - r.numpy()).max() / (np.abs(r.numpy()).max() + 1e-6))
                for o, r in zip(outputs, reference))
    common = dict(model=name, threads=torch.get_num_threads(), runtime=f"onnxruntime {ort.__version__}")
    rows.add("onnx_export_s", export_s, "s", **common)
    rows.add("encoder_1024_s", statistics.median(torch_times), "s", model=name, threads=torch.get_num_threads(),
             runtime="torch eager fp32 (in turn with onnxruntime)")
    rows.add("encoder_1024_s", statistics.median(onnx_times), "s", **common)
    rows.add("onnx_max_rel_error", error, "", note="against PyTorch, same weights and input", **common)


def measure_lama(runs: int, rows: Rows, margin: int = 128) -> None:
    """big-LaMa (spandrel, random weights) on the crop around a 200x150 object in a 12 MP photo: the
    object's box with `margin` pixels around it, padded to LaMa's multiple of 8, at the photo's scale."""
    from benchmarks.bench import object_mask
    from benchmarks.bench_models import build_lama

    photo = synthetic_photo(4000, 3000)
    mask = object_mask(photo, 200, 150)
    ys, xs = np.nonzero(mask)
    top, left = max(ys.min() - margin, 0), max(xs.min() - margin, 0)
    bottom, right = min(ys.max() + 1 + margin, 3000), min(xs.max() + 1 + margin, 4000)
    height, width = -(-(bottom - top) // 8) * 8, -(-(right - left) // 8) * 8
    crop = torch.from_numpy(photo[top:top + height, left:left + width]).permute(2, 0, 1)[None].float() / 255
    hole = torch.from_numpy(mask[top:top + height, left:left + width] > 0)[None, None].float()
    model = build_lama()
    with torch.inference_mode():
        first = time.perf_counter()
        model(crop, hole)
        first_s = time.perf_counter() - first
        seconds, _ = median_time(lambda: model(crop, hole), runs)
    common = dict(model="big-lama", crop=f"{width}x{height}", threads=torch.get_num_threads())
    rows.add("lama_first_call_s", first_s, "s", note="cold: the load's warm-up absorbs it", **common)
    rows.add("lama_crop_s", seconds, "s", **common)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cpu_goal", description=__doc__)
    parser.add_argument("--models", nargs="+", default=["edgetam", "sam2.1-tiny"])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--channels-last", action="store_true", help="also measure with channels_last weights")
    parser.add_argument("--compile", action="store_true", help="also measure the encoder under torch.compile")
    parser.add_argument("--onnx", action="store_true", help="also measure the encoder in ONNX Runtime")
    parser.add_argument("--lama", action="store_true", help="also measure big-LaMa on the erase crop")
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = Rows()
    with tempfile.TemporaryDirectory(prefix="cpu-goal-") as scratch:
        for name in args.models:
            model = build(name)
            reference = measure_path(name, model, args.runs, rows, runtime="torch eager fp32")
            if args.channels_last:
                measure_path(name, model.to(memory_format=torch.channels_last), args.runs, rows,
                             runtime="torch eager fp32 channels_last")
                model = model.to(memory_format=torch.contiguous_format)
            if args.compile:
                model.vision_encoder = torch.compile(model.vision_encoder)
                started = time.perf_counter()
                with torch.inference_mode():
                    model.get_image_embeddings(pixel_values(synthetic_photo(4000, 3000)))
                rows.add("compile_first_call_s", time.perf_counter() - started, "s", model=name)
                measure_path(name, model, args.runs, rows, runtime="torch.compile fp32")
                model = build(name)
            if args.onnx:
                measure_onnx_decoder(name, model, args.runs, rows, Path(scratch), reference)
                measure_onnx(name, model, args.runs, rows, Path(scratch), reference)
    if args.lama:
        measure_lama(args.runs, rows)
    if args.json:
        Path(args.json).write_text(json.dumps(rows.rows, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

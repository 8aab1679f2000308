"""Benchmark the editor on this machine with the real architectures and random weights.

Speed and memory do not depend on the weights' values, so no download is needed:
SAM is built from segment-anything's registry, the inpainting pipelines from the released
models' configurations, saved to a temporary folder and loaded through the product's loader.

    python benchmarks/bench.py                       # SAM vit_b + SD2 on this device
    python benchmarks/bench.py --sam vit_h --inpaint sdxl --steps 20 --photo 4000x3000
"""
from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from editor import masks  # noqa: E402
from editor.cli import quiet_libraries  # noqa: E402
from editor.config import load_config  # noqa: E402
from editor.engine import Backends, EditOptions, Engine  # noqa: E402
from editor.prompts import Prompts  # noqa: E402
from editor.segmenter import GrabCutSegmenter, SamSegmenter  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sam", default="vit_b", choices=["vit_b", "vit_l", "vit_h", "none"])
    parser.add_argument("--inpaint", default="auto", choices=["auto", "sd2", "sdxl", "none"])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--photo", default="4000x3000", help="WIDTHxHEIGHT of the synthetic photo")
    parser.add_argument("--clicks", type=int, default=10)
    args = parser.parse_args()
    quiet_libraries()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    inpaint = args.inpaint if args.inpaint != "auto" else ("sdxl" if device == "cuda" else "sd2")
    width, height = (int(v) for v in args.photo.split("x"))
    photo = np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8)
    print(f"machine: {_machine(device)}")
    print(f"photo: {width}x{height}")
    if args.sam != "none":
        _bench_sam(args.sam, device, photo, args.clicks)
    _bench_fallback_erase(photo)
    if inpaint != "none":
        _bench_inpaint(inpaint, device, photo, args.steps)
    print(f"peak process memory: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.1f} GiB")


def _machine(device: str) -> str:
    cpu = f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"
    if device == "cuda":
        return f"{torch.cuda.get_device_name(0)} ({cpu})"
    return f"CPU only ({cpu})"


def _timed(label: str, run, repeat: int = 1):  # type: ignore[no-untyped-def]
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeat):
        result = run()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / repeat
    print(f"{label}: {seconds * 1000:.0f} ms")
    return result


def _bench_sam(model_type: str, device: str, photo: np.ndarray, clicks: int) -> None:
    from segment_anything import sam_model_registry

    model = sam_model_registry[model_type]().to(device).eval()
    segmenter = SamSegmenter(model, f"sam {model_type}", cache_size=2)
    _timed(f"sam {model_type}: embedding (once per image version)", lambda: segmenter.prepare(photo))
    _timed("sam: cache hit (content hash of the photo)", lambda: segmenter.prepare(photo), repeat=3)
    height, width = photo.shape[:2]
    prompts = Prompts()
    times = []
    for i in range(clicks):
        prompts = prompts.add_point(width * (0.3 + 0.04 * i), height * 0.5, positive=i % 4 != 3)
        start = time.perf_counter()
        segmenter.segment(photo, prompts.validated(width, height))
        times.append(time.perf_counter() - start)
    print(f"sam: click latency, 1st / {clicks}th click: {times[0] * 1000:.0f} / {times[-1] * 1000:.0f} ms")


def _bench_fallback_erase(photo: np.ndarray) -> None:
    config = load_config(None, ["device=cpu"])
    backends = Backends("cpu", "grabcut", "none", "opencv telea")
    engine = Engine(GrabCutSegmenter(), None, backends, config.inpaint, config.composite, config.erase)
    mask = _small_mask(photo)
    _timed("opencv erase (fallback), small object, full photo in and out", lambda: engine.erase(photo, mask))
    _timed("grabcut selection (fallback)", lambda: engine.select(photo, Prompts(((photo.shape[1] / 2, photo.shape[0] / 2),), (1,))))


def _small_mask(photo: np.ndarray) -> np.ndarray:
    height, width = photo.shape[:2]
    mask = np.zeros((height, width), np.uint8)
    mask[height // 2 - height // 12 : height // 2 + height // 12, width // 2 - width // 16 : width // 2 + width // 16] = 255
    return mask


def _bench_inpaint(name: str, device: str, photo: np.ndarray, steps: int) -> None:
    from editor.backends import build_engine

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / name
        start = time.perf_counter()
        (_build_sdxl if name == "sdxl" else _build_sd2)().save_pretrained(path, safe_serialization=True)
        print(f"{name}: built and saved random weights in {time.perf_counter() - start:.0f} s")
        config = load_config(None, [f"device={device}", f"inpaint.model={path}", f"inpaint.steps={steps}",
                                    "inpaint.strength=1.0", "sam.checkpoint=auto", f"models_dir={folder}"])
        engine = build_engine(config, show_progress=False)
        native = engine.inpainter.native_size  # type: ignore[union-attr]
        _timed(f"{name}: pipeline load (fp16 + offload on CUDA, fp32 on CPU)",
               lambda: engine.inpainter.pipelines.get(engine.inpainter.source))  # type: ignore[union-attr]
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        mask = _small_mask(photo)
        result = _timed(f"{name}: fill, {steps} steps at {native}px, small object in the photo",
                        lambda: engine.fill(photo, mask, "a red ball", EditOptions(seed=1)))
        band = masks.grow(mask, config.composite.grow + config.composite.feather) == 0
        exact = bool(np.array_equal(result.images[0][band], photo[band]))
        print(f"{name}: pixels outside the band bit-identical: {exact}")
        if device == "cuda":
            print(f"{name}: peak GPU memory: {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")


def _build_sd2():  # type: ignore[no-untyped-def]
    """stable-diffusion-2-inpainting's architecture (configs as released), random weights."""
    from diffusers import StableDiffusionInpaintPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    unet = UNet2DConditionModel(
        sample_size=64, in_channels=9, out_channels=4, layers_per_block=2,
        block_out_channels=(320, 640, 1280, 1280), attention_head_dim=(5, 10, 20, 20),
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=1024, use_linear_projection=True,
    )
    text = CLIPTextModel(CLIPTextConfig(hidden_size=1024, intermediate_size=4096, num_attention_heads=16,
                                        num_hidden_layers=23, projection_dim=512, hidden_act="gelu"))
    return StableDiffusionInpaintPipeline(vae=_vae(768), text_encoder=text, tokenizer=_tokenizer(), unet=unet,
                                          scheduler=_scheduler(), safety_checker=None, feature_extractor=None,
                                          requires_safety_checker=False)


def _build_sdxl():  # type: ignore[no-untyped-def]
    """stable-diffusion-xl-1.0-inpainting-0.1's architecture (configs as released), random weights."""
    from diffusers import StableDiffusionXLInpaintPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    unet = UNet2DConditionModel(
        sample_size=128, in_channels=9, out_channels=4, layers_per_block=2,
        block_out_channels=(320, 640, 1280), attention_head_dim=(5, 10, 20), transformer_layers_per_block=(1, 2, 10),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=2048, use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816,
    )
    text_l = CLIPTextModel(CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_attention_heads=12,
                                          num_hidden_layers=12, hidden_act="quick_gelu"))
    text_g = CLIPTextModelWithProjection(CLIPTextConfig(hidden_size=1280, intermediate_size=5120, num_attention_heads=20,
                                                        num_hidden_layers=32, projection_dim=1280, hidden_act="gelu"))
    return StableDiffusionXLInpaintPipeline(vae=_vae(1024), text_encoder=text_l, text_encoder_2=text_g,
                                            tokenizer=_tokenizer(), tokenizer_2=_tokenizer(), unet=unet,
                                            scheduler=_scheduler(), requires_aesthetics_score=False,
                                            force_zeros_for_empty_prompt=True)


def _vae(sample_size: int):  # type: ignore[no-untyped-def]
    from diffusers import AutoencoderKL

    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2,
                         block_out_channels=(128, 256, 512, 512), sample_size=sample_size,
                         down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)


def _scheduler():  # type: ignore[no-untyped-def]
    from diffusers import EulerDiscreteScheduler

    return EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                  steps_offset=1, timestep_spacing="leading")


def _tokenizer():  # type: ignore[no-untyped-def]
    from tests.tiny_models import write_clip_tokenizer

    return write_clip_tokenizer(Path(tempfile.mkdtemp(prefix="bench-tokenizer-")))


if __name__ == "__main__":
    main()

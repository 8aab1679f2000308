"""The released models' architectures with random weights, for benchmarks on a machine
without their weights (speed and memory do not depend on the weights' values).

Each builder follows the published configuration of the model it stands for; a small
offline CLIP tokenizer replaces the real vocabulary, whose cost is negligible.
"""
from __future__ import annotations

import json
import string
from pathlib import Path
from typing import Any

import torch

SEED = 0
TEXT_MAX_LENGTH = 77
BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
EXTRA_MERGES = ("t h", "th e</w>", "a n", "an d</w>", "r e", "e d</w>", "a p", "ap p", "l e</w>")


def write_clip_tokenizer(folder: Path) -> Any:
    """Write a tiny vocab.json/merges.txt into `folder` and return the CLIPTokenizer built from them.

    Unknown pieces (punctuation, non-ASCII) map to the unk token, `<|endoftext|>`.
    """
    from transformers import CLIPTokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab_file = folder / "vocab.json"
    merges_file = folder / "merges.txt"
    vocab_file.write_text(json.dumps(_tiny_vocab()), encoding="utf-8")
    merges_file.write_text("#version: 0.2\n" + "\n".join(EXTRA_MERGES) + "\n", encoding="utf-8")
    # Positional on purpose: transformers 5 silently ignores vocab_file=/merges_file= keywords
    # here, and without model_max_length it pads to an effectively unbounded length.
    return CLIPTokenizer(str(vocab_file), str(merges_file), model_max_length=TEXT_MAX_LENGTH)


def _tiny_vocab() -> dict[str, int]:
    """Byte-level BPE vocab: letters and digits (inner and word-final), a few merges, specials last."""
    pieces = list(string.ascii_lowercase + string.digits)
    tokens = pieces + [p + "</w>" for p in pieces]
    tokens += ["".join(merge.split()) for merge in EXTRA_MERGES]
    tokens += [BOS_TOKEN, EOS_TOKEN]  # Real CLIP also puts them at the end.
    return {token: index for index, token in enumerate(tokens)}


def build_sam(model_type: str) -> Any:
    """segment-anything's own vit_b / vit_l / vit_h, randomly initialised."""
    from segment_anything import sam_model_registry

    torch.manual_seed(SEED)
    return sam_model_registry[model_type]().eval()


def save_inpaint_pipeline(name: str, folder: Path) -> Path:
    """`sd2` or `sdxl` inpainting as released, random weights, saved as a diffusers folder."""
    torch.manual_seed(SEED)
    pipe = _build_sdxl(folder) if name == "sdxl" else _build_sd2(folder)
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


def _build_sd2(tokenizer_dir: Path) -> Any:
    """stable-diffusion-2-inpainting: UNet, VAE and OpenCLIP-H text encoder configs as released."""
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
    return StableDiffusionInpaintPipeline(
        vae=_vae(768), text_encoder=text, tokenizer=write_clip_tokenizer(tokenizer_dir / "tokenizer"), unet=unet,
        scheduler=_scheduler(), safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )


def _build_sdxl(tokenizer_dir: Path) -> Any:
    """stable-diffusion-xl-1.0-inpainting-0.1: UNet, VAE and both text encoders as released."""
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
    text_g = CLIPTextModelWithProjection(CLIPTextConfig(hidden_size=1280, intermediate_size=5120,
                                                        num_attention_heads=20, num_hidden_layers=32,
                                                        projection_dim=1280, hidden_act="gelu"))
    return StableDiffusionXLInpaintPipeline(
        vae=_vae(1024), text_encoder=text_l, text_encoder_2=text_g,
        tokenizer=write_clip_tokenizer(tokenizer_dir / "tokenizer"),
        tokenizer_2=write_clip_tokenizer(tokenizer_dir / "tokenizer_2"), unet=unet,
        scheduler=_scheduler(), requires_aesthetics_score=False, force_zeros_for_empty_prompt=True,
    )


def _vae(sample_size: int) -> Any:
    from diffusers import AutoencoderKL

    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2,
                         block_out_channels=(128, 256, 512, 512), sample_size=sample_size,
                         down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)


def _scheduler() -> Any:
    from diffusers import EulerDiscreteScheduler

    return EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                  steps_offset=1, timestep_spacing="leading")

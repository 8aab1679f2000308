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


# --- segmenters and the eraser of the model layer ----------------------------------------------

# facebook/sam2.1-hiera-*: the Hiera trunk of each size as transformers' convert_sam2_to_hf.py types it
# (tiny is Sam2HieraDetConfig's default); prompt encoder and mask decoder are the same for all sizes.
SAM2_SIZES: dict[str, dict[str, Any]] = {
    "tiny": {},
    "small": dict(blocks_per_stage=[1, 2, 11, 2], global_attention_blocks=[7, 10, 13]),
    "base-plus": dict(hidden_size=112, embed_dim_per_stage=[112, 224, 448, 896],
                      num_attention_heads_per_stage=[2, 4, 8, 16], blocks_per_stage=[2, 3, 16, 3],
                      global_attention_blocks=[12, 16, 20], window_positional_embedding_background_size=[14, 14]),
    "large": dict(hidden_size=144, embed_dim_per_stage=[144, 288, 576, 1152],
                  num_attention_heads_per_stage=[2, 4, 8, 16], blocks_per_stage=[2, 6, 36, 4],
                  global_attention_blocks=[23, 33, 43], window_positional_embedding_background_size=[7, 7],
                  window_size_per_stage=[8, 4, 16, 8]),
}


def build_sam2(size: str) -> Any:
    """`Sam2Model` of facebook/sam2.1-hiera-`size` (tiny, small, base-plus, large), random weights."""
    from transformers import Sam2Config, Sam2HieraDetConfig, Sam2Model, Sam2VisionConfig

    trunk = Sam2HieraDetConfig(**SAM2_SIZES[size])
    channels = list(reversed(trunk.embed_dim_per_stage))
    torch.manual_seed(SEED)
    return Sam2Model(Sam2Config(vision_config=Sam2VisionConfig(backbone_config=trunk,
                                                               backbone_channel_list=channels))).eval()


def build_edgetam() -> Any:
    """`EdgeTamModel` as yonigozlan/EdgeTAM-hf: a RepViT-M1 trunk from timm (no pretrained weights)
    under SAM 2's neck, prompt encoder and decoder; random weights. The backbone config is given in
    full because transformers 5.23's default misspells `architecture` and builds a ResNet-50."""
    from transformers import EdgeTamConfig, EdgeTamModel, EdgeTamVisionConfig, TimmWrapperConfig

    backbone = TimmWrapperConfig(architecture="repvit_m1",
                                 model_args={"in_chans": 3, "features_only": True, "out_indices": [0, 1, 2, 3]})
    torch.manual_seed(SEED)
    return EdgeTamModel(EdgeTamConfig(vision_config=EdgeTamVisionConfig(backbone_config=backbone))).eval()


def save_segmenter(name: str, folder: Path) -> Path:
    """The registry's segmenter `name` (`sam2.1-<size>` or `edgetam`) saved as the published
    transformers folders are: config.json with its model_type, model.safetensors, and the image
    processor's preprocessor_config.json (1024x1024, 256x256 masks, the defaults); loadable by path."""
    from transformers import Sam2ImageProcessor, Sam2Processor

    model = build_edgetam() if name == "edgetam" else build_sam2(name.removeprefix("sam2.1-"))
    model.save_pretrained(folder, safe_serialization=True)
    Sam2Processor(Sam2ImageProcessor()).save_pretrained(folder)
    return Path(folder)


def build_lama() -> Any:
    """big-lama's generator (spandrel's LaMa: 4 channels in, 3 out), random weights."""
    from spandrel.architectures.LaMa import LaMa

    torch.manual_seed(SEED)
    return LaMa(in_nc=4, out_nc=3).eval()


def save_lama(path: Path) -> Path:
    """big-lama with random weights as a `.safetensors` state dict that spandrel's ModelLoader
    recognises (keys `model.model.*`, as spandrel names big-lama's generator)."""
    from safetensors.torch import save_file

    state = {key: value.contiguous() for key, value in build_lama().state_dict().items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path))
    return path


def save_upscaler(name: str, path: Path) -> Path:
    """Real-ESRGAN `name`'s released architecture with random weights, as a `.safetensors` state dict
    that spandrel recognises: the compact VGG of general-x4v3 (64 features, 32 convolutions), the
    23-block RRDB of x4plus, and that RRDB over 2x2-unshuffled pixels for x2plus."""
    from safetensors.torch import save_file
    from spandrel.architectures.Compact import Compact
    from spandrel.architectures.ESRGAN import ESRGAN

    builders = {
        "realesr-general-x4v3": lambda: Compact(num_feat=64, num_conv=32, upscale=4),
        "realesrgan-x4plus": lambda: ESRGAN(in_nc=3, out_nc=3, num_filters=64, num_blocks=23, scale=4),
        "realesrgan-x2plus": lambda: ESRGAN(in_nc=12, out_nc=3, num_filters=64, num_blocks=23, scale=4,
                                            shuffle_factor=2),
    }
    state = {key: value.contiguous() for key, value in builders[name]().state_dict().items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path))
    return path

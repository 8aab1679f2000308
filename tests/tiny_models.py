"""Tiny random models for the test suite, built offline.

The tests run without network access, so they cannot fetch real SAM or Stable
Diffusion weights from the Hugging Face hub. Instead, this module builds the
*real* architectures (segment_anything's SAM, diffusers' SD2 and SDXL
inpainting pipelines with transformers' CLIP text encoders) at tiny sizes with
seeded random weights, and saves them to disk in the same formats as the
released checkpoints. The product's real loading code then loads them, so the
tests exercise the actual loading and inference paths in a few seconds on a CPU.
Outputs are deterministic but meaningless (the weights are random).
"""

from __future__ import annotations

import pathlib
from functools import partial

import torch
from diffusers import (
    AutoencoderKL,
    DiffusionPipeline,
    EulerDiscreteScheduler,
    StableDiffusionInpaintPipeline,
    StableDiffusionXLInpaintPipeline,
    UNet2DConditionModel,
)
from segment_anything.modeling import (
    ImageEncoderViT,
    MaskDecoder,
    PromptEncoder,
    Sam,
    TwoWayTransformer,
)
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
)

from benchmarks.bench_models import TEXT_MAX_LENGTH, write_clip_tokenizer  # the same offline tokenizer as the benchmark

SEED = 0

# SAM: the real image encoder works on 1024 px; the tiny one on 256 px.
SAM_IMAGE_SIZE = 256
SAM_PATCH_SIZE = 16
SAM_EMBED_DIM = 32
SAM_DECODER_HEADS = 8  # Always 8 in SAM; not recoverable from tensor shapes.

# Text encoders / tokenizer.
TEXT_HIDDEN = 32

# SDXL: add_time_ids are (original_size, crop_top_left, target_size) = 6 numbers
# when requires_aesthetics_score=False; each is embedded to ADD_TIME_DIM and
# concatenated with text_encoder_2's pooled projection.
SDXL_ADD_TIME_DIM = 8
SDXL_TIME_IDS = 6


# --------------------------------------------------------------------------- SAM


def build_tiny_sam() -> Sam:
    """Return a seeded, randomly initialised SAM at tiny size (256 px input, 32-d)."""
    torch.manual_seed(SEED)
    embedding_size = SAM_IMAGE_SIZE // SAM_PATCH_SIZE
    sam = Sam(
        image_encoder=ImageEncoderViT(
            img_size=SAM_IMAGE_SIZE,
            patch_size=SAM_PATCH_SIZE,
            embed_dim=SAM_EMBED_DIM,
            depth=2,
            num_heads=2,
            mlp_ratio=4,
            out_chans=SAM_EMBED_DIM,
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=(1,),
            window_size=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=SAM_EMBED_DIM,
            image_embedding_size=(embedding_size, embedding_size),
            input_image_size=(SAM_IMAGE_SIZE, SAM_IMAGE_SIZE),
            mask_in_chans=16,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(
                depth=2,
                embedding_dim=SAM_EMBED_DIM,
                mlp_dim=64,
                num_heads=SAM_DECODER_HEADS,
            ),
            transformer_dim=SAM_EMBED_DIM,
            iou_head_depth=3,
            iou_head_hidden_dim=SAM_EMBED_DIM,
        ),
        # Same normalisation constants as segment_anything/build_sam.py.
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )
    return sam.eval()


def make_tiny_sam_checkpoint(path: pathlib.Path) -> pathlib.Path:
    """Save a tiny SAM's state dict to `path` (like the released .pth files) and return it."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(build_tiny_sam().state_dict(), path)
    return path


# ------------------------------------------------------------------ SD building blocks


def _text_config(tokenizer: CLIPTokenizer) -> CLIPTextConfig:
    return CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=TEXT_HIDDEN,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=TEXT_MAX_LENGTH,
        projection_dim=TEXT_HIDDEN,
        hidden_act="gelu",
        layer_norm_eps=1e-5,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def _tiny_vae() -> AutoencoderKL:
    """Four levels like the real VAE, so the latent scale factor is 8 as in SD/SDXL."""
    torch.manual_seed(SEED)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 16, 16),
        layers_per_block=1,
        norm_num_groups=8,
        latent_channels=4,
        sample_size=32,
    )


def _tiny_inpaint_unet(cross_attention_dim: int, **extra: object) -> UNet2DConditionModel:
    """9-channel inpainting UNet: 4 noisy latents + 1 mask + 4 masked-image latents."""
    torch.manual_seed(SEED)
    return UNet2DConditionModel(
        sample_size=32,
        in_channels=9,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(32, 64),
        layers_per_block=1,
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        cross_attention_dim=cross_attention_dim,
        **extra,
    )


def _scheduler() -> EulerDiscreteScheduler:
    return EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        steps_offset=1,
        timestep_spacing="leading",
    )


def _save(pipe: DiffusionPipeline, folder: pathlib.Path) -> pathlib.Path:
    pipe.save_pretrained(str(folder), safe_serialization=True)
    return folder


# ---------------------------------------------------------------- SD pipelines


def make_tiny_sd2_inpaint(folder: pathlib.Path) -> pathlib.Path:
    """Save a tiny random SD2-style StableDiffusionInpaintPipeline to `folder` and return it."""
    folder = pathlib.Path(folder)
    tokenizer = write_clip_tokenizer(folder / "tokenizer")
    torch.manual_seed(SEED)
    text_encoder = CLIPTextModel(_text_config(tokenizer))
    pipe = StableDiffusionInpaintPipeline(
        vae=_tiny_vae(),
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=_tiny_inpaint_unet(cross_attention_dim=TEXT_HIDDEN),
        scheduler=_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    return _save(pipe, folder)


def make_tiny_sdxl_inpaint(folder: pathlib.Path) -> pathlib.Path:
    """Save a tiny random StableDiffusionXLInpaintPipeline (two text encoders) to `folder` and return it."""
    folder = pathlib.Path(folder)
    tokenizer = write_clip_tokenizer(folder / "tokenizer")
    tokenizer_2 = write_clip_tokenizer(folder / "tokenizer_2")
    torch.manual_seed(SEED)
    text_encoder = CLIPTextModel(_text_config(tokenizer))
    torch.manual_seed(SEED + 1)
    text_encoder_2 = CLIPTextModelWithProjection(_text_config(tokenizer_2))
    unet = _tiny_inpaint_unet(
        # Hidden states of both encoders are concatenated for cross-attention.
        cross_attention_dim=2 * TEXT_HIDDEN,
        transformer_layers_per_block=(1, 2),
        addition_embed_type="text_time",
        addition_time_embed_dim=SDXL_ADD_TIME_DIM,
        projection_class_embeddings_input_dim=SDXL_TIME_IDS * SDXL_ADD_TIME_DIM + TEXT_HIDDEN,
    )
    pipe = StableDiffusionXLInpaintPipeline(
        vae=_tiny_vae(),
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        unet=unet,
        scheduler=_scheduler(),
        requires_aesthetics_score=False,
        force_zeros_for_empty_prompt=True,
        add_watermarker=False,
    )
    return _save(pipe, folder)


# ------------------------------------------------------------------ Grounding DINO

# A BERT word-piece vocabulary: the specials, the punctuation Grounding DINO's prompts use, and
# the words the tests ask for. Anything else becomes [UNK].
DETECTOR_WORDS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ",", "a", "the", "dog", "cat", "person",
                  "car", "sky", "red", "disc", "ball")
DETECTOR_TEXT_LENGTH = 32  # tokens; the real model takes 256
DETECTOR_QUERIES = 12  # detection slots; the real model has 900
DETECTOR_IMAGE_EDGES = {"shortest_edge": 128, "longest_edge": 192}  # real: 800 / 1333; smaller leaves 1x1 maps


def make_tiny_grounding_dino(folder: pathlib.Path) -> pathlib.Path:
    """Save a tiny random Grounding DINO (Swin backbone, BERT text encoder) with its processor to `folder`.

    The layout is that of a hub repo such as IDEA-Research/grounding-dino-tiny, so that
    `AutoProcessor` and `AutoModelForZeroShotObjectDetection` load it by path.
    """
    from transformers import (
        BertTokenizer,
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        GroundingDinoImageProcessor,
        GroundingDinoProcessor,
        SwinConfig,
    )

    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(DETECTOR_WORDS) + "\n", encoding="utf-8")
    tokenizer = BertTokenizer(str(vocab), model_max_length=DETECTOR_TEXT_LENGTH)
    processor = GroundingDinoProcessor(GroundingDinoImageProcessor(size=DETECTOR_IMAGE_EDGES), tokenizer)
    backbone = SwinConfig(window_size=7, embed_dim=8, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1], image_size=64,
                          out_features=["stage2", "stage3", "stage4"], out_indices=[2, 3, 4])
    text = {"model_type": "bert", "vocab_size": len(DETECTOR_WORDS), "hidden_size": 8, "num_hidden_layers": 1,
            "num_attention_heads": 2, "intermediate_size": 8, "max_position_embeddings": DETECTOR_TEXT_LENGTH}
    config = GroundingDinoConfig(
        backbone_config=backbone, text_config=text, max_text_len=DETECTOR_TEXT_LENGTH,
        d_model=32, encoder_layers=1, decoder_layers=2,  # one decoder layer breaks the tied box heads
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=16, decoder_ffn_dim=16,
        num_queries=DETECTOR_QUERIES, num_feature_levels=4, encoder_n_points=2, decoder_n_points=2,
    )
    torch.manual_seed(SEED)
    GroundingDinoForObjectDetection(config).eval().save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


# ------------------------------------------------------------------ OWLv2


def make_tiny_owlv2(folder: pathlib.Path) -> pathlib.Path:
    """Save a tiny random OWLv2 (CLIP-style text and vision towers, 64 px, 4x4 patches) with its processor."""
    from transformers import Owlv2Config, Owlv2ForObjectDetection, Owlv2ImageProcessor, Owlv2Processor

    folder = pathlib.Path(folder)
    tokenizer = write_clip_tokenizer(folder)
    tokenizer.model_max_length = 16  # OWLv2 pads every query to this many tokens
    text = {"vocab_size": len(tokenizer), "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
            "num_attention_heads": 2, "max_position_embeddings": 16, "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id}
    vision = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
              "image_size": 64, "patch_size": 16}
    torch.manual_seed(SEED)
    model = Owlv2ForObjectDetection(Owlv2Config(text_config=text, vision_config=vision, projection_dim=16))
    model.eval().save_pretrained(folder)
    Owlv2Processor(Owlv2ImageProcessor(size={"height": 64, "width": 64}), tokenizer).save_pretrained(folder)
    return folder


# --------------------------------------------------------------------------- a config for anyone


def write_tiny_setup(folder: pathlib.Path, lama: bool = False) -> pathlib.Path:
    """Tiny SAM and SD 2 inpainting (and, with `lama`, a random LaMa: 200 MB) in `folder`, and
    `folder/config.yaml` pointing at them: `--config folder/config.yaml` runs the app, CLI or load test on them."""
    folder = folder.resolve()
    sam = make_tiny_sam_checkpoint(folder / "tiny_sam.pth")
    sd2 = make_tiny_sd2_inpaint(folder / "tiny-sd2-inpaint")
    eraser = "opencv"
    if lama:
        from tests.tiny_lama import make_tiny_lama

        eraser = str(make_tiny_lama(folder / "lama")["safetensors"])
    config = folder / "config.yaml"
    config.write_text(
        "# Tiny random models (meaningless output), built offline by `python -m tests.tiny_models`.\n"
        f"device: cpu\nmodels_dir: {folder}\nauto_download: false\n"
        f"segmenter:\n  model: {sam}\neraser:\n  model: {eraser}\n  max_side: 128\n"
        f"inpaint:\n  model: {sd2}\n  steps: 2\n  strength: 1.0\n"
        f"server:\n  sessions_dir: {folder / 'sessions'}\n", encoding="utf-8")
    return config


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(prog="python -m tests.tiny_models",
                                     description="write tiny random models and DIR/config.yaml for them")
    parser.add_argument("folder", type=pathlib.Path)
    parser.add_argument("--lama", action="store_true", help="also a random LaMa eraser (200 MB) instead of OpenCV")
    options = parser.parse_args()
    print(f"wrote {write_tiny_setup(options.folder, options.lama)}")

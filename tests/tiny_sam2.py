"""Tiny random SAM 2.1 and EdgeTAM folders, built offline, and their pytest fixtures.

The real architectures from transformers (`Sam2Model` with a Hiera encoder, `EdgeTamModel` with
timm's RepViT encoder, built without pretrained weights) at a 128 px input, saved with
`save_pretrained` beside their processor, as a hub repository such as facebook/sam2.1-hiera-tiny
or yonigozlan/EdgeTAM-hf lays them out. The product loads them by path through the registry.
"""
from __future__ import annotations

import pathlib

import pytest
import torch

SEED = 0
SIDE = 64  # the tiny models' input side (the real ones: 1024)
HIDDEN = 32  # prompt encoder, mask decoder and FPN width (the real ones: 256)
INIT_RANGE = 0.2  # the default 0.02 gives logits near 1e-5: masks of rounding noise


def _feature_sizes() -> list[list[int]]:
    return [[SIDE // 4] * 2, [SIDE // 8] * 2, [SIDE // 16] * 2]


def _heads() -> dict[str, dict]:
    """The prompt encoder and mask decoder, shared by both models."""
    prompt = {"hidden_size": HIDDEN, "image_size": SIDE, "patch_size": 16}
    decoder = {"hidden_size": HIDDEN, "mlp_dim": 64, "num_attention_heads": 2, "iou_head_hidden_dim": HIDDEN}
    return {"prompt_encoder_config": prompt, "mask_decoder_config": decoder, "initializer_range": INIT_RANGE}


def _save_processor(folder: pathlib.Path) -> None:
    from transformers import Sam2ImageProcessor, Sam2Processor

    image_processor = Sam2ImageProcessor(size={"height": SIDE, "width": SIDE},
                                         mask_size={"height": SIDE // 4, "width": SIDE // 4})
    Sam2Processor(image_processor).save_pretrained(folder)


def build_tiny_sam2() -> torch.nn.Module:
    """A random SAM 2.1: Hiera with one or two blocks per stage, global attention in one."""
    from transformers import Sam2Config, Sam2Model

    hiera = {"model_type": "sam2_hiera_det_model", "hidden_size": 8, "image_size": [SIDE, SIDE],
             "blocks_per_stage": [1, 1, 2, 1], "embed_dim_per_stage": [8, 16, 32, 64],
             "num_attention_heads_per_stage": [1, 1, 1, 1], "window_size_per_stage": [4, 4, 4, 4],
             "global_attention_blocks": [3],  # not a stage's first block: those pool their queries
             "window_positional_embedding_background_size": [4, 4]}
    vision = {"model_type": "sam2_vision_model", "backbone_config": hiera, "backbone_channel_list": [64, 32, 16, 8],
              "backbone_feature_sizes": _feature_sizes(), "fpn_hidden_size": HIDDEN, "initializer_range": INIT_RANGE}
    torch.manual_seed(SEED)
    return Sam2Model(Sam2Config(vision_config=vision, **_heads())).eval()


def build_tiny_edgetam() -> torch.nn.Module:
    """A random EdgeTAM: timm's RepViT-M1 (no pretrained weights) and tiny heads.

    transformers 5.23's default EdgeTAM backbone config misspells `architecture` and builds a
    ResNet-50, so the backbone is named here.
    """
    from transformers import EdgeTamConfig, EdgeTamModel, TimmWrapperConfig

    backbone = TimmWrapperConfig(architecture="repvit_m1",
                                 model_args={"features_only": True, "out_indices": [0, 1, 2, 3]})
    vision = {"model_type": "edgetam_vision_model", "backbone_config": backbone,
              "backbone_feature_sizes": _feature_sizes(), "fpn_hidden_size": HIDDEN, "initializer_range": INIT_RANGE}
    torch.manual_seed(SEED)
    return EdgeTamModel(EdgeTamConfig(vision_config=vision, **_heads())).eval()


def make_tiny_sam2(folder: pathlib.Path) -> pathlib.Path:
    build_tiny_sam2().save_pretrained(folder)
    _save_processor(folder)
    return folder


def make_tiny_edgetam(folder: pathlib.Path) -> pathlib.Path:
    build_tiny_edgetam().save_pretrained(folder)
    _save_processor(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_sam2_dir(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return make_tiny_sam2(tmp_path_factory.mktemp("sam2") / "tiny-sam2.1")


@pytest.fixture(scope="session")
def tiny_edgetam_dir(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return make_tiny_edgetam(tmp_path_factory.mktemp("edgetam") / "tiny-edgetam")

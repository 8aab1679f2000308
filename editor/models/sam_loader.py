"""Loading Segment Anything checkpoints: the architecture is read from the weights' shapes.

Every size of SAM's image encoder and mask decoder shows in its state dict, so one builder
serves vit_b, vit_l, vit_h and any smaller model built the same way (the tests' tiny one).
Only the decoder's attention head count is invisible in shapes; SAM always uses 8.
"""
from __future__ import annotations

import pickle
import re
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

from editor.core.errors import EditorError
from editor.models.loading import reason

DECODER_HEADS = 8
KNOWN_TYPES = {(768, 12): "vit_b", (1024, 24): "vit_l", (1280, 32): "vit_h"}


@dataclass(frozen=True)
class SamArchitecture:
    embed_dim: int
    depth: int
    num_heads: int
    global_attn_indexes: tuple[int, ...]
    window_size: int
    patch_size: int
    img_size: int
    mlp_ratio: float
    out_chans: int
    decoder_depth: int
    decoder_mlp_dim: int
    iou_hidden_dim: int
    iou_depth: int
    num_multimask_outputs: int
    mask_in_chans: int

    @property
    def model_type(self) -> str:
        return KNOWN_TYPES.get((self.embed_dim, self.depth), f"custom ({self.embed_dim}x{self.depth})")


def read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """The state dict, loaded safely (no pickled code) onto the CPU whatever device saved it."""
    try:
        state = _load(path)
    except FileNotFoundError:
        raise EditorError(f"SAM checkpoint not found: {path}") from None
    except Exception as exc:  # torch raises many types for a damaged or foreign file
        if isinstance(exc, pickle.UnpicklingError) and "weights only" in str(exc).lower():
            raise _refusal(path, str(exc)) from None
        raise EditorError(f"cannot read SAM checkpoint {path}: {reason(exc)}") from None
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if not isinstance(state, dict) or "image_encoder.patch_embed.proj.weight" not in state:
        raise EditorError(f"{path} is not a Segment Anything checkpoint")
    return state


def infer_architecture(state: dict[str, torch.Tensor]) -> SamArchitecture:
    patch = state["image_encoder.patch_embed.proj.weight"]
    embed_dim, patch_size = patch.shape[0], patch.shape[-1]
    grid = state["image_encoder.pos_embed"].shape[1]
    depth = _count(state, r"image_encoder\.blocks\.(\d+)\.")
    spans = [state[f"image_encoder.blocks.{i}.attn.rel_pos_h"].shape[0] for i in range(depth)]
    head_dim = state["image_encoder.blocks.0.attn.rel_pos_h"].shape[1]
    global_blocks = tuple(i for i, span in enumerate(spans) if span == 2 * grid - 1)
    windowed = [span for span in spans if span != 2 * grid - 1]
    out_chans = state["image_encoder.neck.0.weight"].shape[0]
    return SamArchitecture(
        embed_dim=embed_dim,
        depth=depth,
        num_heads=embed_dim // head_dim,
        global_attn_indexes=global_blocks,
        window_size=(windowed[0] + 1) // 2 if windowed else 0,
        patch_size=patch_size,
        img_size=grid * patch_size,
        mlp_ratio=state["image_encoder.blocks.0.mlp.lin1.weight"].shape[0] / embed_dim,
        out_chans=out_chans,
        decoder_depth=_count(state, r"mask_decoder\.transformer\.layers\.(\d+)\."),
        decoder_mlp_dim=state["mask_decoder.transformer.layers.0.mlp.lin1.weight"].shape[0],
        iou_hidden_dim=state["mask_decoder.iou_prediction_head.layers.0.weight"].shape[0],
        iou_depth=_count(state, r"mask_decoder\.iou_prediction_head\.layers\.(\d+)\.weight"),
        num_multimask_outputs=state["mask_decoder.mask_tokens.weight"].shape[0] - 1,
        mask_in_chans=state["prompt_encoder.mask_downscaling.3.weight"].shape[0],
    )


def build_sam(arch: SamArchitecture) -> Sam:
    grid = arch.img_size // arch.patch_size
    return Sam(
        image_encoder=ImageEncoderViT(
            depth=arch.depth,
            embed_dim=arch.embed_dim,
            img_size=arch.img_size,
            mlp_ratio=arch.mlp_ratio,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            num_heads=arch.num_heads,
            patch_size=arch.patch_size,
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=arch.global_attn_indexes,
            window_size=arch.window_size,
            out_chans=arch.out_chans,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=arch.out_chans,
            image_embedding_size=(grid, grid),
            input_image_size=(arch.img_size, arch.img_size),
            mask_in_chans=arch.mask_in_chans,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=arch.num_multimask_outputs,
            transformer=TwoWayTransformer(
                depth=arch.decoder_depth,
                embedding_dim=arch.out_chans,
                mlp_dim=arch.decoder_mlp_dim,
                num_heads=DECODER_HEADS,
            ),
            transformer_dim=arch.out_chans,
            iou_head_depth=arch.iou_depth,
            iou_head_hidden_dim=arch.iou_hidden_dim,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )


def load_sam(path: Path, model_type: str, device: str) -> tuple[Sam, str]:
    """The model in eval mode on `device`, and its type (vit_b, vit_l, vit_h or custom).

    `model_type` "auto" accepts what the checkpoint holds; a named type must match it.
    """
    state = read_checkpoint(path)
    try:
        arch = infer_architecture(state)
    except (KeyError, IndexError, ZeroDivisionError):
        raise EditorError(f"{path} is not a Segment Anything checkpoint this editor understands") from None
    if model_type != "auto" and arch.model_type != model_type:
        raise EditorError(f"{path.name} holds a {arch.model_type} model, not the {model_type} its name promises")
    model = build_sam(arch)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise EditorError(f"{path.name} does not fit SAM's layout: {str(exc).splitlines()[0]}") from None
    return model.to(device).eval(), arch.model_type


def _refusal(path: Path, reason: str) -> EditorError:
    """torch's weights-only refusal in one line (its own text goes on to suggest weights_only=False,
    which would run whatever code the file holds)."""
    if "Unsupported global" in reason:
        return EditorError(f"SAM checkpoint {path} holds more than plain weights (pickled code or objects): "
                           "it may be unsafe and was not loaded")
    return EditorError(f"cannot read SAM checkpoint {path}: it is damaged or not a PyTorch weights file")


def _count(state: dict[str, torch.Tensor], pattern: str) -> int:
    found = {int(m.group(1)) for key in state if (m := re.match(pattern, key))}
    return max(found) + 1 if found else 0


def _load(path: Path) -> dict[str, torch.Tensor]:
    # mmap reads only the tensors used: reading the architecture of a 2.5 GB file stays instant.
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # an old, non-zip checkpoint cannot be memory-mapped
        return torch.load(path, map_location="cpu", weights_only=True)

"""What the `edit` and `batch` commands share: the selection their flags make, and the edit of one
photo in each `--mode` (one branch per mode, so that a mode added here is in both commands).

Works on the parsed flags (`argparse.Namespace`); the parsers themselves are in `editor.cli`.
"""
from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from editor.core import canvas, masks
from editor.core.errors import EditorError
from editor.core.config import ExportConfig
from editor.core.photo_io import PhotoInfo, edit_metadata, format_of, load_mask, write_photo
from editor.core.prompts import Prompts, parse_box, parse_point
from editor.engine.ops import EditOptions, EditResult, Engine, upscaled_by
from editor.models.base import Progress

MODES = ("erase", "fill", "background", "outpaint", "upscale", "cutout")
SELECTION_MODES = ("erase", "fill", "background", "cutout")  # the others work on the whole photo
PROMPT_MODES = ("fill", "background")  # a prompt is required
PROGRESS_UNITS = {"upscale": ("upscaling", "tile")}  # what a progress bar counts, where not generation steps


@dataclass(frozen=True)
class ModeResult:
    """What one photo's edit wrote: an image per variation, the same metadata in each."""

    images: list[np.ndarray]  # HxWx3 (HxWx4 for a cut-out) uint8
    metadata: dict[str, str]
    summary: str  # what `wrote PATH (...)` says of it


def check_flags(args: argparse.Namespace, mask_flag: str, has_mask: bool) -> None:
    """Refuse, before anything loads, flags that cannot make this mode's edit; `mask_flag` names
    the command's mask option (`--mask`, `--mask-dir`) and `has_mask` says whether it was given."""
    prompted = not prompts_from(args).is_empty or args.text is not None
    if args.mode in SELECTION_MODES:
        if has_mask and prompted:
            raise EditorError(f"give either {mask_flag} or text/point/box prompts, not both")
        if not has_mask and not prompted:
            raise EditorError(f"give {mask_flag}, --text QUERY, at least one --point, or a --box")
    elif has_mask or prompted or args.invert:
        given = [flag for flag, value in ((mask_flag, has_mask), ("--text", args.text is not None),
                                          ("--point", args.point), ("--neg-point", args.neg_point),
                                          ("--box", args.box), ("--invert", args.invert)) if value]
        raise EditorError(f"--mode {args.mode} works on the whole photo, it takes no selection: "
                          f"drop {', '.join(given)}")
    if args.mode in PROMPT_MODES and not args.prompt.strip():
        raise EditorError(f"--mode {args.mode} needs --prompt TEXT")
    if args.mode == "outpaint" and (args.extend is None) == (args.aspect is None):
        raise EditorError("--mode outpaint needs either --extend LEFT,TOP,RIGHT,BOTTOM or --aspect W:H")
    if args.mode != "outpaint" and (args.extend is not None or args.aspect is not None):
        raise EditorError("--extend and --aspect are for --mode outpaint")
    if (args.mode == "upscale") != (args.scale is not None):
        raise EditorError("--mode upscale needs --scale 2 or 4" if args.mode == "upscale" else
                          "--scale is for --mode upscale")
    if args.mode == "upscale" and args.prompt.strip():
        raise EditorError("--mode upscale enlarges the whole photo: it takes no --prompt")


def prompts_from(args: argparse.Namespace) -> Prompts:
    """The --point, --neg-point and --box flags as prompts."""
    prompts = Prompts(box=parse_box(args.box) if args.box else None)
    for text in args.point:
        prompts = prompts.add_point(*parse_point(text), positive=True)
    for text in args.neg_point:
        prompts = prompts.add_point(*parse_point(text), positive=False)
    return prompts


def select(engine: Engine, image: np.ndarray, args: argparse.Namespace,
           report: Callable[[str], None] | None = None) -> np.ndarray:
    """The selection the prompts make; with --text, the detected instances refined by the clicks
    (`report` gets one line naming what was found)."""
    prompts = prompts_from(args)
    if args.text is None:
        return engine.select(image, prompts)
    found = engine.select_by_text(image, args.text, prompts)
    if report is not None:
        listed = ", ".join(f"{d.label} {d.score:.2f} at {_box_text(d.box)}" for d in found.detections)
        report(f"found {len(found.detections)}: {listed} (selected with {engine.backends.segmenter})")
    return found.mask


def selection(engine: Engine, image: np.ndarray, args: argparse.Namespace, mask_path: Path | None,
              max_pixels: int, report: Callable[[str], None] | None = None) -> np.ndarray | None:
    """The mode's selection (None for a mode that works on the whole photo): the mask file when
    given, else what the prompts select; inverted with --invert."""
    if args.mode not in SELECTION_MODES:
        return None
    if mask_path is not None:
        mask = load_mask(mask_path, (image.shape[1], image.shape[0]), max_pixels)
    else:
        mask = select(engine, image, args, report)
    return masks.invert(mask) if args.invert else mask


def edit_options(args: argparse.Namespace) -> EditOptions:
    return EditOptions(args.negative_prompt, args.steps, args.guidance, args.strength, args.seed, args.num_images,
                       generative=args.generative, model=args.model)


def apply_mode(engine: Engine, image: np.ndarray, mask: np.ndarray | None, args: argparse.Namespace,
               progress: Progress | None = None) -> ModeResult:
    """One photo's edit in `args.mode`; `mask` is `selection(...)`'s."""
    mode, options = args.mode, edit_options(args)
    if mode == "fill":
        return _edited(engine.fill(image, mask, args.prompt, options, progress))
    if mode == "erase":
        return _edited(engine.erase(image, mask, options, progress))
    if mode == "background":
        return _edited(engine.replace_background(image, mask, args.prompt, options, progress))
    if mode == "cutout":
        return _cutout(engine, image, mask, options)
    if mode == "upscale":
        return _upscaled(engine.upscale(image, args.scale, progress))
    if mode == "outpaint":
        return _outpainted(engine.outpaint(image, _extend(image, args), args.prompt, options, progress))
    raise EditorError(f"--mode {mode} is not in this version of the editor")


def write(result: ModeResult, output: Path, info: PhotoInfo, export: ExportConfig) -> list[Path]:
    """Each image with the photo's colour profile and metadata, in the format `output`'s extension
    names (else export.format): `output`, then `<stem>_2`, `<stem>_3`, ... for variations."""
    paths = [variation_path(output, index) for index in range(len(result.images))]
    fmt = format_of(output, export.format)
    if fmt == "jpeg" and result.images[0].shape[-1] == 4:
        raise EditorError(f"{output.name}: JPEG has no transparency: write the cut-out as .png or .tif")
    metadata = edit_metadata([{"edit": result.metadata.get("mode", ""), **result.metadata}])
    for image, path in zip(result.images, paths):
        write_photo(path, image, info, metadata, fmt, export.colour, export.jpeg_quality)
    return paths


def variation_path(output: Path, index: int) -> Path:
    return output if index == 0 else output.with_name(f"{output.stem}_{index + 1}{output.suffix}")


def _edited(result: EditResult) -> ModeResult:
    return ModeResult(result.images, result.metadata, f"seed {result.seed}, {result.metadata['model']}")


def _extend(image: np.ndarray, args: argparse.Namespace) -> canvas.Extend:
    """--extend's paddings, or --aspect's for this photo's size (each photo of a batch its own)."""
    if args.extend is not None:
        return canvas.parse_extend(args.extend)
    return canvas.extend_for_aspect(image.shape[1], image.shape[0], args.aspect)


def _outpainted(result: EditResult) -> ModeResult:
    height, width = result.images[0].shape[:2]
    return ModeResult(result.images, result.metadata, f"{width}x{height}, extended by {result.metadata['extend']}, "
                                                      f"seed {result.seed}, {result.metadata['model']}")


def _upscaled(result: EditResult) -> ModeResult:
    height, width = result.images[0].shape[:2]
    return ModeResult(result.images, result.metadata, f"{width}x{height}, {upscaled_by(result.metadata['model'])}")


def _cutout(engine: Engine, image: np.ndarray, mask: np.ndarray | None, options: EditOptions) -> ModeResult:
    rgba = engine.cutout(image, mask, options)
    grow, feather = engine.composite.grow, engine.composite.feather  # what Engine.cutout used: options set neither
    metadata = {"mode": "cutout", "grow": str(grow), "feather": str(feather), "software": "photo-editor"}
    return ModeResult([rgba], metadata, f"RGBA cut-out, grow {grow} px, soft edge {feather} px")


def _box_text(box: tuple[float, float, float, float]) -> str:
    return ",".join(f"{v:.0f}" for v in box)

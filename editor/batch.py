"""`python -m editor batch`: one edit over many photos, with the models loaded once for the run.

Each photo is edited as `edit` would (`editor.modes`) and written to OUTDIR/<stem>.png. A photo
that fails is one line (`failed NAME: reason`) and the run goes on; one whose output exists is
skipped unless --overwrite. The run ends with `done N, skipped M, failed K`, exit status 1 when
K > 0. A missing model stops the run at once: it would fail every photo the same way.
"""
from __future__ import annotations

import argparse
import os
import sys
from collections import Counter
from pathlib import Path

from editor.core.config import Config
from editor.core.errors import EditorError, ModelUnavailableError
from editor.core.photo_io import load_photo
from editor.engine.ops import Engine
from editor.modes import apply_mode, check_flags, selection, write

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".jpe", ".webp", ".tif", ".tiff", ".bmp"})


def run(args: argparse.Namespace, config: Config) -> int:
    from tqdm import tqdm

    from editor.build import build_engine

    check_flags(args, "--mask-dir", args.mask_dir is not None)
    photos = find_photos([Path(given) for given in args.inputs])
    masks = mask_files(Path(args.mask_dir)) if args.mask_dir else None
    out_dir = _output_folder(Path(args.output))
    engine = build_engine(config)  # once: every model loads at its first use and serves every photo
    counts: Counter[str] = Counter()
    writers: dict[Path, Path] = {}  # output -> the photo of this run that writes it
    with tqdm(total=len(photos), desc=args.mode, unit="photo", file=sys.stderr) as bar:
        for photo in photos:
            outcome, line = _one(engine, config, args, photo, masks, out_dir, writers)
            counts[outcome] += 1
            tqdm.write(line, file=sys.stderr if outcome == "failed" else sys.stdout)
            bar.update()
    print(f"done {counts['done']}, skipped {counts['skipped']}, failed {counts['failed']}")
    return 1 if counts["failed"] else 0


def find_photos(inputs: list[Path]) -> list[Path]:
    """The photos to edit: each file as given (one that cannot be read fails in its turn), and each
    folder's image files by name (not its subfolders)."""
    photos: list[Path] = []
    for given in inputs:
        if given.is_dir():
            photos += sorted(path for path in given.iterdir() if path.is_file() and _is_image_name(path))
        else:
            photos.append(given)
    if not photos:
        raise EditorError(f"no photos in {', '.join(str(p) for p in inputs)} "
                          f"(image files end in {', '.join(sorted(IMAGE_SUFFIXES))})")
    return photos


def mask_files(folder: Path) -> dict[str, list[Path]]:
    """The folder's image files by stem: the masks of the photos with that stem."""
    if not folder.is_dir():
        raise EditorError(f"--mask-dir {folder} is not a folder")
    found: dict[str, list[Path]] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and _is_image_name(path):
            found.setdefault(path.stem, []).append(path)
    return found


def mask_for(photo: Path, masks: dict[str, list[Path]], folder: str) -> Path:
    candidates = masks.get(photo.stem, [])
    if not candidates:
        raise EditorError(f"no mask named {photo.stem}.* in {folder}")
    if len(candidates) > 1:
        raise EditorError(f"{len(candidates)} masks for it in {folder}: {', '.join(p.name for p in candidates)}")
    return candidates[0]


def _one(engine: Engine, config: Config, args: argparse.Namespace, photo: Path, masks: dict[str, list[Path]] | None,
         out_dir: Path, writers: dict[Path, Path]) -> tuple[str, str]:
    """One photo: ("done" | "skipped" | "failed", the line that says so)."""
    output = out_dir / f"{photo.stem}.png"
    if output in writers:
        return "failed", f"failed {photo.name}: {writers[output].name} writes {output} in this run already"
    writers[output] = photo
    if output.exists() and not args.overwrite:
        return "skipped", f"skipped {photo.name}: {output} exists (--overwrite redoes it)"
    try:
        image, info = load_photo(photo, config.max_image_pixels)
        mask_path = mask_for(photo, masks, args.mask_dir) if masks is not None else None
        result = apply_mode(engine, image, selection(engine, image, args, mask_path, config.max_image_pixels),
                            args)
        paths = write(result, output, info, config.export)
    except ModelUnavailableError:
        raise  # the same for every photo: the run stops here, in one line
    except EditorError as exc:
        return "failed", f"failed {photo.name}: {_one_line(str(exc))}"
    except Exception as exc:  # a bug or a library failure on this photo: the others may still work
        if os.environ.get("EDITOR_DEBUG"):
            raise
        return "failed", f"failed {photo.name}: unexpected {type(exc).__name__}: {_one_line(str(exc))}"
    return "done", f"wrote {', '.join(str(path) for path in paths)} ({result.summary})"


def _output_folder(folder: Path) -> Path:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EditorError(f"cannot make the output folder {folder}: {exc.strerror or exc}") from None
    return folder


def _is_image_name(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def _one_line(text: str) -> str:
    return " ".join(text.split()) if text else "(no message)"

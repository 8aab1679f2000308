"""`python -m editor` end to end, in real subprocesses (HF_HUB_OFFLINE=1, tiny models by path).

Every command runs once, all of them concurrently in one module-scoped fixture (each process
spends seconds importing torch and diffusers); the tests then check what each one wrote.
"""
from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from editor.core import masks
from editor.build import build_engine
from editor.engine.ops import Engine
from editor.core.photo_io import load_image, load_mask, read_png_metadata
from editor.core.prompts import Prompts
from tests.conftest import tiny_config

ROOT = Path(__file__).resolve().parent.parent
LIMIT = 50_000_000
# Random weights score every detection slot high or low at random: take them all (at most 3).
TEXT_SETTINGS = ("detector.box_threshold=0", "detector.text_threshold=0", "detector.max_detections=3")


@dataclass
class Run:
    args: list[str]
    returncode: int
    stdout: str
    stderr: str


def make_photo() -> np.ndarray:
    """Like conftest's `photo`: a textured gradient with a red disc at (160, 120), radius 50."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:240, 0:320]
    image = np.stack([xx * 255 // 320, yy * 255 // 240, np.full_like(xx, 128)], axis=2).astype(np.int16)
    image += rng.integers(-10, 10, image.shape, dtype=np.int16)
    image[(xx - 160) ** 2 + (yy - 120) ** 2 < 50**2] = (220, 30, 30)
    return np.clip(image, 0, 255).astype(np.uint8)


def disc_mask() -> np.ndarray:
    yy, xx = np.mgrid[0:240, 0:320]
    return np.where((xx - 160) ** 2 + (yy - 120) ** 2 < 52**2, 255, 0).astype(np.uint8)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("cli")
    photo = make_photo()
    paths = {name: folder / name for name in (
        "photo.png", "rotated.jpg", "disc.png", "background.png", "small.png", "corrupt.png", "empty-models")}
    Image.fromarray(photo).save(paths["photo.png"])
    # Stored turned a quarter (240 wide, 320 high); EXIF orientation 6 displays it as the 320x240 photo.
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(photo).transpose(Image.Transpose.ROTATE_90).save(paths["rotated.jpg"], exif=exif, quality=95)
    Image.fromarray(disc_mask()).save(paths["disc.png"])
    Image.fromarray(masks.invert(disc_mask())).save(paths["background.png"])
    Image.new("L", (100, 80), 255).save(paths["small.png"])
    data = paths["photo.png"].read_bytes()
    paths["corrupt.png"].write_bytes(data[: len(data) // 2])
    paths["empty-models"].mkdir()
    paths["out"] = folder / "out"
    paths["out"].mkdir()
    return paths


@pytest.fixture(scope="module")
def runs(files: dict[str, Path], tiny_sam_path: Path, tiny_sd2_dir: Path, tiny_detector_dir: Path) -> dict[str, Run]:
    out, photo = files["out"], str(files["photo.png"])
    no_models = ["--set", f"models_dir={files['empty-models']}"]
    sam = ["--set", f"segmenter.model={tiny_sam_path}"]
    sd2 = ["--set", f"inpaint.model={tiny_sd2_dir}"]
    detector = ["--set", f"detector.model={tiny_detector_dir}", *(f"--set={key}" for key in TEXT_SETTINGS)]
    commands = {
        # what works
        "info-none": ["info", *no_models],
        "info-models": ["info", *no_models, *sam, *sd2, *detector],
        "segment-point": ["segment", str(files["rotated.jpg"]), "-o", str(out / "point.png"), "--point", "300,200",
                          *no_models, *sam],
        "segment-box": ["segment", photo, "-o", str(out / "box.png"), "--box", "100,60,220,180", *no_models],
        "erase-point": ["edit", photo, "-o", str(out / "erased.png"), "--mode", "erase", "--point", "160,120",
                        *no_models],
        "fill": ["edit", photo, "-o", str(out / "filled.png"), "--mode", "fill", "--mask", str(files["disc.png"]),
                 "--prompt", "a bowl of tulips", "--steps", "2", "--seed", "5", "--num-images", "2",
                 *no_models, *sd2],
        "background-inverted": ["edit", photo, "-o", str(out / "background.png"), "--mode", "background",
                                "--mask", str(files["background.png"]), "--invert", "--prompt", "a beach",
                                "--steps", "2", "--seed", "1", *no_models, *sd2],
        "segment-text": ["segment", photo, "-o", str(out / "text.png"), "--text", "Person, dog", *no_models, *sam,
                         *detector],
        "background-text": ["edit", photo, "-o", str(out / "beach.png"), "--mode", "background", "--text", "person",
                            "--prompt", "a beach at sunset", "--steps", "2", "--seed", "3", *no_models, *sam, *sd2,
                            *detector],
        # what fails, each with one line
        "missing-image": ["segment", str(files["out"] / "absent.png"), "-o", str(out / "x.png"), "--point", "1,1"],
        "corrupt-image": ["edit", str(files["corrupt.png"]), "-o", str(out / "x.png"), "--mode", "erase",
                          "--point", "1,1", *no_models],
        "bad-point": ["segment", photo, "-o", str(out / "x.png"), "--point", "12;30"],
        "point-outside": ["segment", photo, "-o", str(out / "x.png"), "--point", "400,10", *no_models],
        "unknown-flag": ["segment", photo, "-o", str(out / "x.png"), "--point", "1,1", "--frobnicate"],
        "unknown-set-key": ["info", "--set", "segmenter.colour=red"],
        "bad-set-value": ["info", "--set", "inpaint.steps=many"],
        "fill-no-prompt": ["edit", photo, "-o", str(out / "x.png"), "--mode", "fill", "--mask", str(files["disc.png"])],
        "fill-no-model": ["edit", photo, "-o", str(out / "x.png"), "--mode", "fill", "--mask", str(files["disc.png"]),
                          "--prompt", "tulips", *no_models],
        "fill-unknown-model": ["edit", photo, "-o", str(out / "x.png"), "--mode", "fill", "--mask",
                               str(files["disc.png"]), "--prompt", "tulips", "--model", "sdxl", *no_models, *sd2],
        "mask-size": ["edit", photo, "-o", str(out / "x.png"), "--mode", "erase", "--mask", str(files["small.png"]),
                      *no_models],
        "missing-checkpoint": ["segment", photo, "-o", str(out / "x.png"), "--point", "1,1",
                               "--set", f"segmenter.model={files['out'] / 'absent.pth'}"],
        "mask-and-point": ["edit", photo, "-o", str(out / "x.png"), "--mode", "erase", "--mask", str(files["disc.png"]),
                           "--point", "1,1"],
        "text-no-detector": ["segment", photo, "-o", str(out / "x.png"), "--text", "dog", *no_models],
        "text-threshold-1": ["segment", photo, "-o", str(out / "x.png"), "--text", "dog", *no_models, *detector,
                             "--set", "detector.box_threshold=1.0"],
        "text-nothing-inside": ["segment", photo, "-o", str(out / "x.png"), "--text", "person", *no_models, *detector],
        "text-empty": ["segment", photo, "-o", str(out / "x.png"), "--text", " , ", *no_models, *detector],
    }
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    env.pop("EDITOR_DEBUG", None)

    def run(args: list[str]) -> Run:
        done = subprocess.run([sys.executable, "-m", "editor", *args], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=300)
        return Run(args, done.returncode, done.stdout, done.stderr)

    with ThreadPoolExecutor(max_workers=3) as pool:
        results = dict(zip(commands, pool.map(run, commands.values())))
    return results


def ok(run: Run) -> Run:
    assert run.returncode == 0, f"{run.args}\nstdout: {run.stdout}\nstderr: {run.stderr}"
    assert "Traceback" not in run.stderr
    return run


def lines(text: str) -> dict[str, str]:
    return dict(line.split(": ", 1) for line in text.splitlines() if ": " in line)


# --- what works ------------------------------------------------------------------------------------


def test_info_without_weights_names_the_fallbacks(runs: dict[str, Run]) -> None:
    info = lines(ok(runs["info-none"]).stdout)
    assert info["device"] == "cpu"
    assert info["segmenter"].startswith("grabcut")
    assert info["inpainter"].startswith("none")
    assert "opencv" in info["eraser"]
    assert "python -m editor download segmenter" in info["missing"]
    assert "python -m editor download inpaint" in info["missing"]


def test_info_with_models_names_them(runs: dict[str, Run], tiny_sam_path: Path, tiny_sd2_dir: Path,
                                     tiny_detector_dir: Path) -> None:
    info = lines(ok(runs["info-models"]).stdout)
    assert info["segmenter"].startswith("sam ") and str(tiny_sam_path) in info["segmenter"]
    assert info["inpainter"].startswith("diffusers") and str(tiny_sd2_dir) in info["inpainter"]
    assert info["detector"].startswith(str(tiny_detector_dir)) and "box threshold 0" in info["detector"]
    assert "missing" not in info


def test_info_without_the_detector_says_how_to_get_it(runs: dict[str, Run]) -> None:
    info = lines(ok(runs["info-none"]).stdout)
    assert info["detector"].startswith("none") and "python -m editor download detector" in info["detector"]


def text_engine(files: dict[str, Path], tiny_sam_path: Path, tiny_detector_dir: Path) -> Engine:
    """The engine the --text commands ran with, to compare what they wrote with."""
    return build_engine(tiny_config(files["empty-models"], f"segmenter.model={tiny_sam_path}",
                                    f"detector.model={tiny_detector_dir}", *TEXT_SETTINGS), show_progress=False)


def test_segment_text_writes_the_union_of_the_detected_instances(runs: dict[str, Run], files: dict[str, Path],
                                                                 tiny_sam_path: Path, tiny_detector_dir: Path) -> None:
    run = ok(runs["segment-text"])
    mask = load_mask(files["out"] / "text.png", (320, 240), LIMIT)
    found = text_engine(files, tiny_sam_path, tiny_detector_dir).select_by_text(make_photo(), "person, dog")
    assert np.array_equal(mask, found.mask)
    assert run.stdout.startswith(f"found {len(found.detections)}: ")
    for d in found.detections:
        assert f"{d.label} {d.score:.2f} at {d.box[0]:.0f}," in run.stdout


def test_background_by_text_keeps_the_detected_subject_exact(runs: dict[str, Run], files: dict[str, Path],
                                                             tiny_sam_path: Path, tiny_detector_dir: Path) -> None:
    run = ok(runs["background-text"])
    photo = make_photo()
    out = load_image(files["out"] / "beach.png", LIMIT)
    subject = text_engine(files, tiny_sam_path, tiny_detector_dir).select_by_text(photo, "person").mask > 0
    assert out.shape == photo.shape and subject.any() and not subject.all()
    assert np.array_equal(out[subject], photo[subject])
    assert (out[~subject] != photo[~subject]).any()
    meta = read_png_metadata(files["out"] / "beach.png")
    assert meta["mode"] == "background" and meta["prompt"] == "a beach at sunset" and meta["seed"] == "3"
    assert "found " in run.stdout and "person" in run.stdout


def test_segment_point_writes_a_binary_mask_of_the_rotated_size(runs: dict[str, Run], files: dict[str, Path]) -> None:
    ok(runs["segment-point"])
    with Image.open(files["out"] / "point.png") as img:
        assert img.format == "PNG" and img.mode == "L"
        assert img.size == (320, 240)  # the EXIF-rotated size, not the stored 240x320
        assert set(np.unique(np.asarray(img)).tolist()) <= {0, 255}
    assert "point.png" in runs["segment-point"].stdout


def test_segment_box_selects_the_disc(runs: dict[str, Run], files: dict[str, Path]) -> None:
    ok(runs["segment-box"])
    with Image.open(files["out"] / "box.png") as img:
        assert img.mode == "L" and img.size == (320, 240)
        mask = np.asarray(img)
    assert set(np.unique(mask).tolist()) <= {0, 255}
    selected, disc = mask > 0, disc_mask() > 0
    assert (selected & disc).sum() / (selected | disc).sum() > 0.8


def test_erase_without_weights_uses_the_fallback(runs: dict[str, Run], files: dict[str, Path],
                                                 fallback_engine: Engine) -> None:
    ok(runs["erase-point"])
    photo = load_image(files["photo.png"], LIMIT)
    out = load_image(files["out"] / "erased.png", LIMIT)
    assert out.shape == photo.shape
    # The CLI selected what the engine selects for that click, and erased exactly that.
    mask = fallback_engine.select(photo, Prompts().add_point(160, 120))
    band = masks.grow(mask, fallback_engine.composite.grow + fallback_engine.composite.feather) > 0
    assert np.array_equal(out[~band], photo[~band])
    red, green, blue = out[disc_mask() > 0].astype(float).mean(axis=0)
    assert red < green + blue
    assert np.array_equal(out, fallback_engine.erase(photo, mask).images[0])
    assert read_png_metadata(files["out"] / "erased.png")["mode"] == "erase"


def test_fill_writes_the_input_size_with_edit_metadata(runs: dict[str, Run], files: dict[str, Path],
                                                       tiny_sd2_dir: Path) -> None:
    run = ok(runs["fill"])
    photo = load_image(files["photo.png"], LIMIT)
    disc = load_mask(files["disc.png"], (320, 240), LIMIT)
    band = masks.grow(disc, 16) > 0
    outputs = [files["out"] / "filled.png", files["out"] / "filled_2.png"]  # --num-images 2
    images = []
    for path in outputs:
        with Image.open(path) as img:
            assert img.format == "PNG" and img.size == (320, 240) and img.mode == "RGB"
        out = load_image(path, LIMIT)
        assert np.array_equal(out[~band], photo[~band])
        assert (out[disc > 0] != photo[disc > 0]).any()
        images.append(out)
        meta = read_png_metadata(path)
        assert meta["mode"] == "fill"
        assert meta["prompt"] == "a bowl of tulips"
        assert meta["negative_prompt"] == "blurry, low quality, distorted, watermark, text"  # config.yaml's
        assert meta["seed"] == "5" and meta["steps"] == "2"
        assert meta["model"] == str(tiny_sd2_dir)
    assert not np.array_equal(images[0], images[1])
    assert "seed 5" in run.stdout


def test_background_with_invert_keeps_the_subject_exact(runs: dict[str, Run], files: dict[str, Path]) -> None:
    ok(runs["background-inverted"])
    photo = load_image(files["photo.png"], LIMIT)
    out = load_image(files["out"] / "background.png", LIMIT)
    subject = disc_mask() > 0  # --invert turned the background mask into the subject
    assert out.shape == photo.shape
    assert np.array_equal(out[subject], photo[subject])
    assert (out[~subject] != photo[~subject]).mean() > 0.5
    meta = read_png_metadata(files["out"] / "background.png")
    assert meta["mode"] == "background" and meta["prompt"] == "a beach" and meta["seed"] == "1"


# --- what fails: non-zero exit, one line on stderr, no traceback -------------------------------------


@pytest.mark.parametrize("name, words", [
    ("missing-image", ["absent.png", "not found"]),
    ("corrupt-image", ["corrupt.png"]),
    ("bad-point", ["point", "12;30"]),
    ("point-outside", ["outside", "320x240"]),
    ("unknown-flag", ["--frobnicate"]),
    ("unknown-set-key", ["segmenter.colour"]),
    ("bad-set-value", ["inpaint.steps"]),
    ("fill-no-prompt", ["--prompt"]),
    ("fill-no-model", ["python -m editor download inpaint"]),
    ("mask-size", ["100x80", "320x240"]),
    ("missing-checkpoint", ["segmenter.model", "absent.pth"]),
    ("mask-and-point", ["--mask"]),
    ("fill-unknown-model", ["no inpainting model 'sdxl' here", "inpaint.models"]),
    ("text-no-detector", ["python -m editor download detector"]),
    ("text-threshold-1", ["no dog found", "detector.box_threshold"]),
    ("text-empty", ["type what to select"]),
    ("text-nothing-inside", ["found 3 boxes", "grabcut", "selected nothing"]),  # GrabCut on the tiny random boxes
])
def test_bad_input_is_one_line_on_stderr(runs: dict[str, Run], files: dict[str, Path], name: str,
                                         words: list[str]) -> None:
    run = runs[name]
    assert run.returncode != 0, f"{name} succeeded: {run.stdout}"
    assert "Traceback" not in run.stderr and "Traceback" not in run.stdout
    stderr_lines = run.stderr.splitlines()
    assert len(stderr_lines) == 1 and stderr_lines[0].strip(), f"{name}: {run.stderr!r}"
    message = stderr_lines[0]
    assert message.startswith("error: ")
    assert "unexpected" not in message  # a handled error, not a bug caught by the last resort
    for word in words:
        assert word in message, f"{name}: {message!r} lacks {word!r}"
    assert not (files["out"] / "x.png").exists()

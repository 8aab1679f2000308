"""`python -m editor batch`: a folder at once, in the process (the engine's build can be counted).

Without weights where no model is needed (GrabCut, OpenCV erase); the tiny detector, SAM and SD2
for the label-to-background workflow.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from editor import build, cli
from editor.core import composite, masks
from editor.core.config import load_config
from editor.core.photo_io import load_image, read_png_metadata
from editor.core.prompts import Prompts
from editor.engine.ops import Engine
from tests.test_cli import TEXT_SETTINGS, disc_mask, make_photo

LIMIT = 50_000_000
BOX = "100,60,220,180"


@dataclass
class Run:
    code: int
    out: list[str]
    err: list[str]  # without the progress bar's redraws

    @property
    def summary(self) -> str:
        return self.out[-1]

    def failed(self) -> list[str]:
        return [line for line in self.err if line.startswith("failed ")]


@pytest.fixture
def builds(monkeypatch: pytest.MonkeyPatch) -> list[Engine]:
    """Every engine the command builds."""
    made: list[Engine] = []
    real = build.build_engine

    def counted(*args: object, **kwargs: object) -> Engine:
        made.append(real(*args, **kwargs))  # type: ignore[arg-type]
        return made[-1]

    monkeypatch.setattr(build, "build_engine", counted)
    return made


def batch(capsys: pytest.CaptureFixture, models_dir: Path, *args: str) -> Run:
    code = cli.main(["batch", *args, "--set", f"models_dir={models_dir}", "--set", "auto_download=false"])
    out, err = capsys.readouterr()
    bar = ("|", "photo/s]")  # tqdm's redraws, split at their carriage returns
    return Run(code, out.splitlines(), [line for line in err.splitlines() if line.strip() and bar[1] not in line])


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """a.png, b.jpg and a broken.png; a text file and a subfolder that are not photos."""
    photos = tmp_path / "photos"
    photos.mkdir()
    photo = make_photo()
    Image.fromarray(photo).save(photos / "a.png")
    Image.fromarray(photo[:, ::-1]).save(photos / "b.jpg", quality=95)
    (photos / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not a photo")
    (photos / "notes.txt").write_text("not a photo")
    (photos / "more").mkdir()
    Image.fromarray(photo).save(photos / "more" / "c.png")
    return photos


def expected_engine(models_dir: Path) -> Engine:
    """What the command builds from the same settings (config.yaml when the tests run beside it)."""
    config = load_config(cli.config_path(None), [f"models_dir={models_dir}", "auto_download=false"])
    return build.build_engine(config, show_progress=False)


def test_a_broken_photo_is_one_line_and_the_run_goes_on(folder: Path, tmp_path: Path, empty_models_dir: Path,
                                                        capsys: pytest.CaptureFixture, builds: list[Engine]) -> None:
    out = tmp_path / "out"  # made by the run
    run = batch(capsys, empty_models_dir, str(folder), "-o", str(out), "--mode", "erase", "--box", BOX)
    assert run.code == 1
    assert run.summary == "done 2, skipped 0, failed 1"
    assert len(builds) == 1, "one engine for the whole run"
    (failed,) = run.failed()
    assert failed.startswith("failed broken.png: ") and "not an image" in failed
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png"], "a folder's photos, not its subfolders"
    engine = expected_engine(empty_models_dir)
    for name in ("a.png", "b.jpg"):
        photo = load_image(folder / name, LIMIT)
        mask = engine.select(photo, Prompts(box=(100, 60, 220, 180)))
        edited = load_image(out / f"{Path(name).stem}.png", LIMIT)
        assert np.array_equal(edited, engine.erase(photo, mask).images[0]), "as `edit` erases it"
        assert read_png_metadata(out / f"{Path(name).stem}.png")["mode"] == "erase"


def test_an_existing_output_is_skipped_unless_overwrite(folder: Path, tmp_path: Path, empty_models_dir: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    (folder / "broken.png").unlink()
    out = tmp_path / "out"
    out.mkdir()
    Image.new("RGB", (8, 8), "white").save(out / "a.png")
    before = (out / "a.png").read_bytes()
    args = (str(folder), "-o", str(out), "--mode", "cutout", "--box", BOX)
    run = batch(capsys, empty_models_dir, *args)
    assert run.code == 0 and run.summary == "done 1, skipped 1, failed 0"
    assert any(line.startswith("skipped a.png: ") and "--overwrite" in line for line in run.out)
    assert (out / "a.png").read_bytes() == before
    assert load_image(out / "b.png", LIMIT).shape == (240, 320, 3)

    run = batch(capsys, empty_models_dir, *args, "--overwrite")
    assert run.code == 0 and run.summary == "done 2, skipped 0, failed 0"
    with Image.open(out / "a.png") as img:
        assert img.mode == "RGBA" and img.size == (320, 240)


def test_masks_come_from_mask_dir_by_stem(tmp_path: Path, empty_models_dir: Path,
                                          capsys: pytest.CaptureFixture, builds: list[Engine]) -> None:
    photos, mask_dir, out = tmp_path / "photos", tmp_path / "masks", tmp_path / "out"
    photos.mkdir()
    mask_dir.mkdir()
    photo = make_photo()
    for name in ("a", "b", "c", "d"):
        Image.fromarray(photo).save(photos / f"{name}.png")
    Image.fromarray(disc_mask()).save(mask_dir / "a.png")
    Image.fromarray(masks.invert(disc_mask())).save(mask_dir / "b.BMP")  # any image type
    Image.new("L", (100, 80), 255).save(mask_dir / "d.png")  # the wrong size
    run = batch(capsys, empty_models_dir, str(photos / "a.png"), str(photos / "b.png"), str(photos / "c.png"),
                str(photos / "d.png"), "-o", str(out), "--mode", "cutout", "--mask-dir", str(mask_dir),
                "--set", "composite.grow=2", "--set", "composite.feather=4")
    assert run.code == 1 and run.summary == "done 2, skipped 0, failed 2"
    assert run.failed() == [f"failed c.png: no mask named c.* in {mask_dir}",
                            "failed d.png: mask d.png is 100x80 but the image is 320x240"]
    for name, mask in (("a", disc_mask()), ("b", masks.invert(disc_mask()))):
        with Image.open(out / f"{name}.png") as img:
            rgba = np.asarray(img)
        assert np.array_equal(rgba[..., :3], photo)
        assert np.array_equal(rgba[..., 3], composite.paste_alpha(mask, 2, 4))
    assert not (out / "c.png").exists() and not (out / "d.png").exists()
    assert len(builds) == 1


@pytest.mark.parametrize("args, message", [
    (["--mode", "fill", "--box", BOX], "--mode fill needs --prompt TEXT"),
    (["--mode", "erase"], "give --mask-dir, --text QUERY, at least one --point, or a --box"),
    (["--mode", "erase", "--box", BOX, "--mask-dir", "x"], "give either --mask-dir or text/point/box prompts"),
    (["--mode", "erase", "--mask-dir", "absent"], "--mask-dir absent is not a folder"),
    (["--mode", "fill", "--box", BOX, "--prompt", "tulips"], "python -m editor download inpaint"),
])
def test_a_run_that_cannot_work_stops_at_once_in_one_line(folder: Path, tmp_path: Path, empty_models_dir: Path,
                                                          capsys: pytest.CaptureFixture, args: list[str],
                                                          message: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (folder / "broken.png").unlink()
    run = batch(capsys, empty_models_dir, str(folder), "-o", str(tmp_path / "out"), *args)
    assert run.code == 1 and len(run.err) == 1 and run.err[0].startswith("error: ") and message in run.err[0]
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").glob("*.png"))


def test_no_photos_is_one_line(tmp_path: Path, empty_models_dir: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "empty").mkdir()
    run = batch(capsys, empty_models_dir, str(tmp_path / "empty"), "-o", str(tmp_path / "out"), "--mode", "erase",
                "--box", BOX)
    assert run.code == 1 and run.err == [f"error: no photos in {tmp_path / 'empty'} (image files end in "
                                         ".bmp, .jpe, .jpeg, .jpg, .png, .tif, .tiff, .webp)"]


def test_two_photos_with_one_name_do_not_overwrite_each_other(folder: Path, tmp_path: Path, empty_models_dir: Path,
                                                              capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    (folder / "more" / "a.png").write_bytes((folder / "a.png").read_bytes())
    run = batch(capsys, empty_models_dir, str(folder / "a.png"), str(folder / "more" / "a.png"), "-o", str(out),
                "--mode", "cutout", "--box", BOX)
    assert run.code == 1 and run.summary == "done 1, skipped 0, failed 1"
    assert run.failed() == [f"failed a.png: a.png writes {out / 'a.png'} in this run already"]


def test_label_to_background_over_a_folder(folder: Path, tmp_path: Path, empty_models_dir: Path,
                                           tiny_sam_path: Path, tiny_sd2_dir: Path, tiny_detector_dir: Path,
                                           capsys: pytest.CaptureFixture, builds: list[Engine]) -> None:
    """`--text QUERY --mode background --prompt ...`: every photo's detected subject kept exactly, its
    background new, with the detector, SAM and the inpainting model loaded once for the run."""
    (folder / "broken.png").unlink()
    out = tmp_path / "out"
    models = [f"segmenter.model={tiny_sam_path}", f"inpaint.model={tiny_sd2_dir}",
              f"detector.model={tiny_detector_dir}", *TEXT_SETTINGS,
              "inpaint.vae_tiling=false"]  # the tiny VAE's tiles are 32 px: hundreds of them, for nothing
    run = batch(capsys, empty_models_dir, str(folder), "-o", str(out), "--text", "person", "--mode", "background",
                "--prompt", "a beach at sunset", "--steps", "2", "--seed", "3",
                *(arg for setting in models for arg in ("--set", setting)))
    assert run.code == 0 and run.summary == "done 2, skipped 0, failed 0", run
    assert len(builds) == 1
    loaded = builds[0]
    assert loaded.detector.load_error is None and loaded.inpainter.load_error is None
    engine = builds[0]  # its selections are deterministic: the subject it kept is the one it selects now
    for name in ("a.png", "b.jpg"):
        photo = load_image(folder / name, LIMIT)
        subject = engine.select_by_text(photo, "person").mask > 0
        edited = load_image(out / f"{Path(name).stem}.png", LIMIT)
        assert np.array_equal(edited[subject], photo[subject])
        assert (edited[~subject] != photo[~subject]).any()
        meta = read_png_metadata(out / f"{Path(name).stem}.png")
        assert meta["mode"] == "background" and meta["prompt"] == "a beach at sunset" and meta["seed"] == "3"

    # Nothing found in a photo: that photo fails in one line, and the others go on.
    run = batch(capsys, empty_models_dir, str(folder), "-o", str(tmp_path / "none"), "--text", "person",
                "--mode", "cutout", "--set", f"detector.model={tiny_detector_dir}",
                "--set", "detector.box_threshold=1.0")
    assert run.code == 1 and run.summary == "done 0, skipped 0, failed 2"
    assert [line.split(":")[0] for line in run.failed()] == ["failed a.png", "failed b.jpg"]
    assert all("no person found" in line for line in run.failed())

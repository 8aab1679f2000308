"""SAM 2.1 and EdgeTAM through transformers: loaded by path through the registry, clicks refine
without encoding again, the embedding cache's budget, the processor's numbers, the GrabCut fallback."""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

from editor.core.config import load_config
from editor.core.prompts import Prompts
from editor.engine.ops import Engine
from editor.models import registry
from editor.models.base import ImageExpired
from editor.models.opencv import GrabCutSegmenter
from editor.models.registry import LoadContext
from editor.models.sam2 import TransformersSegmenter
from tests.tiny_sam2 import SIDE, tiny_edgetam_dir, tiny_sam2_dir  # noqa: F401 (fixtures)

MODELS = ["sam2.1-tiny", "edgetam"]
TINY_EMBEDDING_BYTES = 4 * (4 * 16 * 16 + 8 * 8 * 8 + 32 * 4 * 4)  # the three feature maps, float32


def folder_of(name: str, request: pytest.FixtureRequest) -> Path:
    return request.getfixturevalue("tiny_edgetam_dir" if name == "edgetam" else "tiny_sam2_dir")


def load_segmenter(name: str, folder: Path, *settings: str) -> TransformersSegmenter:
    """Through the registry's real loader, as the composition root does."""
    entry = registry.get(name)
    return registry.loader(entry)(entry, folder, LoadContext(load_config(None, ["device=cpu", *settings]), "cpu"))


def counting(module: torch.nn.Module) -> list[int]:
    calls = [0]
    module.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def photo(seed: int, height: int = 300, width: int = 400) -> np.ndarray:
    """A random photo with a bright square: something for GrabCut to find, too."""
    image = np.random.default_rng(seed).integers(0, 120, (height, width, 3), dtype=np.uint8)
    image[height // 4: height // 2, width // 4: width // 2] = (230, 200, 40)
    return image


def grabcut_select(image: np.ndarray, prompts: Prompts) -> np.ndarray:
    grabcut = GrabCutSegmenter()
    return grabcut.segment(grabcut.prepare(image), prompts).mask


@pytest.fixture(params=MODELS)
def model_name(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def segmenter(model_name: str, request: pytest.FixtureRequest) -> TransformersSegmenter:
    return load_segmenter(model_name, folder_of(model_name, request))


def test_loading_waits_for_the_first_photo(segmenter: TransformersSegmenter, model_name: str) -> None:
    assert not segmenter.loaded and segmenter.load_error is None
    assert segmenter.description.startswith(model_name) and "on cpu" in segmenter.description
    segmenter.prepare(photo(0, 40, 50))
    assert segmenter.loaded and next(segmenter.model.parameters()).dtype == torch.float32


@pytest.mark.parametrize("height, width", [(300, 400), (37, 100), (1, 5), (64, 64)])
def test_a_click_gives_a_mask_of_the_photos_size(segmenter: TransformersSegmenter, height: int, width: int) -> None:
    image = photo(1, height, width)
    ref = segmenter.prepare(image)
    assert (ref.width, ref.height) == (width, height)
    for prompts in (Prompts().add_point(width / 2, height / 2), Prompts(box=(0, 0, width, height)),
                    Prompts(box=(0, 0, width, height)).add_point(0, 0, positive=False)):
        result = segmenter.segment(ref, prompts.validated(width, height))
        assert result.mask.shape == (height, width) and result.mask.dtype == np.uint8
        assert set(np.unique(result.mask).tolist()) <= {0, 255}
        assert result.logits is not None and result.logits.shape == (SIDE // 4, SIDE // 4)


def test_further_clicks_run_the_decoder_once_and_never_the_encoder(segmenter: TransformersSegmenter, model_name: str,
                                                                   request: pytest.FixtureRequest) -> None:
    image = photo(2)
    segmenter.load()
    encodes, decodes = counting(segmenter.model.vision_encoder), counting(segmenter.model.mask_decoder)
    ref = segmenter.prepare(image)
    assert encodes[0] == 1
    prompts, masks_seen, last = Prompts(), [], None
    for i, (x, y) in enumerate([(120, 100), (160, 120), (300, 250), (150, 90)]):
        prompts = prompts.add_point(x, y, positive=i != 2)
        decodes[0] = 0
        last = segmenter.segment(ref, prompts, previous=None if last is None else last.logits)
        masks_seen.append(last.mask)
        assert decodes[0] == 1, f"click {i + 1}"
    assert segmenter.prepare(image.copy()) == ref and encodes[0] == 1, "the same photo is encoded once"
    assert not all(np.array_equal(masks_seen[0], m) for m in masks_seen[1:]), "later clicks change the selection"

    replayed = load_segmenter(model_name, folder_of(model_name, request))  # nothing cached: all clicks at once
    assert np.array_equal(replayed.segment(replayed.prepare(image), prompts).mask, masks_seen[-1])


def test_previous_logits_are_the_mask_prompt_of_the_next_click(segmenter: TransformersSegmenter, model_name: str,
                                                               request: pytest.FixtureRequest) -> None:
    """Given the last click's logits, a segmenter that decoded nothing for this photo runs the
    decoder once, with them as `input_masks`, and gives the same mask as the click-by-click one."""
    image = photo(3)
    first = Prompts().add_point(120, 100)
    second = first.add_point(330, 260, positive=False)
    ref = segmenter.prepare(image)
    before = segmenter.segment(ref, first)
    click_by_click = segmenter.segment(ref, second)

    fresh = load_segmenter(model_name, folder_of(model_name, request))
    fresh_ref = fresh.prepare(image)
    seen: list[torch.Tensor | None] = []
    record = lambda module, args, kwargs: seen.append(kwargs.get("input_masks"))  # noqa: E731
    fresh.model.prompt_encoder.register_forward_pre_hook(record, with_kwargs=True)
    refined = fresh.segment(fresh_ref, second, previous=before.logits)
    assert len(seen) == 1 and seen[0] is not None
    assert np.array_equal(seen[0][0, 0].numpy(), before.logits)
    assert np.array_equal(refined.mask, click_by_click.mask)


def test_image_expired_once_the_cache_dropped_the_photo(model_name: str, request: pytest.FixtureRequest) -> None:
    budget_mb = 1.5 * TINY_EMBEDDING_BYTES / 2**20  # one embedding and a few clicks
    segmenter = load_segmenter(model_name, folder_of(model_name, request), f"segmenter.embedding_cache_mb={budget_mb}")
    a, b = photo(4), photo(5)
    ref_a = segmenter.prepare(a)
    segmenter.segment(ref_a, Prompts().add_point(100, 100))
    segmenter.prepare(b)
    with pytest.raises(ImageExpired):
        segmenter.segment(ref_a, Prompts().add_point(100, 100))
    assert segmenter.prepare(a) == ref_a
    assert segmenter.segment(ref_a, Prompts().add_point(100, 100)).mask.shape == a.shape[:2]


def test_the_cache_stays_within_its_budget(model_name: str, request: pytest.FixtureRequest) -> None:
    budget_mb = 3.5 * TINY_EMBEDDING_BYTES / 2**20
    segmenter = load_segmenter(model_name, folder_of(model_name, request), f"segmenter.embedding_cache_mb={budget_mb}")
    assert segmenter.cache_budget == int(budget_mb * 2**20)
    for i in range(6):  # photos: more than the budget holds
        image, prompts = photo(10 + i, 60 + i, 80), Prompts()
        ref = segmenter.prepare(image)
        for k in range(3):
            prompts = prompts.add_point(5 + 20 * k, 4 + 15 * k, positive=k != 1)
            segmenter.segment(ref, prompts)
            assert 0 < segmenter.cached_bytes <= segmenter.cache_budget


@pytest.mark.parametrize("height, width", [(300, 400), (90, 60)])  # the processor shrinks, or enlarges
def test_preprocessing_and_mask_match_the_transformers_processor(model_name: str, request: pytest.FixtureRequest,
                                                                 height: int, width: int) -> None:
    """Our resize, normalisation, coordinates and upscaling give the processor's numbers and mask."""
    from transformers import AutoProcessor

    folder = folder_of(model_name, request)
    segmenter = load_segmenter(model_name, folder)
    image = photo(6, height, width)
    box = (width * 0.2, height * 0.15, width * 0.6, height * 0.7)
    ours = segmenter.segment(segmenter.prepare(image), Prompts(box=box))

    processor = AutoProcessor.from_pretrained(folder)
    inputs = processor(images=image, input_boxes=[[list(box)]], return_tensors="pt")
    assert torch.allclose(segmenter._slot.get().preprocessing.pixel_values(image), inputs["pixel_values"], atol=1e-5)
    with torch.inference_mode():
        outputs = segmenter.model(pixel_values=inputs["pixel_values"], input_boxes=inputs["input_boxes"],
                                  multimask_output=False)
    theirs = processor.post_process_masks(outputs.pred_masks, inputs["original_sizes"])[0][0, 0].numpy()
    assert np.allclose(outputs.pred_masks[0, 0, 0].numpy(), ours.logits, atol=1e-4)
    assert theirs.any() and not theirs.all()
    assert np.mean((ours.mask > 0) != theirs) < 0.001


def test_concurrent_clicks_match_serial(segmenter: TransformersSegmenter, model_name: str,
                                        request: pytest.FixtureRequest) -> None:
    images = [photo(30 + i, 50 + 7 * i, 90 - 5 * i) for i in range(4)]
    prompts = [Prompts().add_point(10 + 3 * i, 8 + 2 * i).add_point(40, 30 + i, positive=False) for i in range(4)]
    serial = [segmenter.segment(segmenter.prepare(im), p).mask for im, p in zip(images, prompts)]
    shared = load_segmenter(model_name, folder_of(model_name, request))
    barrier = threading.Barrier(4)

    def work(i: int) -> list[np.ndarray]:
        barrier.wait()
        return [shared.segment(shared.prepare(images[(i + k) % 4]), prompts[(i + k) % 4]).mask for k in range(4)]

    with ThreadPoolExecutor(4) as pool:
        for i, results in enumerate(pool.map(work, range(4))):
            assert all(np.array_equal(mask, serial[(i + k) % 4]) for k, mask in enumerate(results))


def broken_folders(tmp_path: Path, tiny_sam2_dir: Path) -> dict[str, Path]:  # noqa: F811
    """A folder whose weights are cut short, one without a model, one holding the other model type."""
    truncated = tmp_path / "truncated-sam2"
    truncated.mkdir()
    for item in tiny_sam2_dir.iterdir():
        data = item.read_bytes()
        (truncated / item.name).write_bytes(data[: len(data) // 2] if item.suffix == ".safetensors" else data)
    empty = tmp_path / "empty-folder"
    empty.mkdir()
    return {"truncated": truncated, "empty": empty}


@pytest.mark.parametrize("broken", ["truncated", "empty"])
def test_a_broken_folder_is_one_remembered_line_and_grabcut_selects(
        broken: str, tmp_path: Path, tiny_sam2_dir: Path, fallback_engine: Engine,  # noqa: F811
        monkeypatch: pytest.MonkeyPatch) -> None:
    import editor.models.sam2 as sam2_module

    folder = broken_folders(tmp_path, tiny_sam2_dir)[broken]
    loads = []
    real_load = sam2_module.load_model
    monkeypatch.setattr(sam2_module, "load_model", lambda *args: loads.append(args) or real_load(*args))
    segmenter = load_segmenter("sam2.1-tiny", folder)
    engine = Engine(segmenter, None, fallback_engine.backends, fallback_engine.defaults, fallback_engine.composite,
                    fallback_engine.erase_config, None, fallback_engine.limits, prefill=fallback_engine.prefill)
    image, prompts = photo(7), Prompts().add_point(150, 110)
    for _ in range(3):
        assert np.array_equal(engine.select(image, prompts), grabcut_select(image, prompts))
    assert len(loads) == 1, "tried once, not at every click"
    error = segmenter.load_error
    assert error is not None and "\n" not in error and folder.name in error
    assert segmenter.description.startswith("grabcut") and "failed to load" in segmenter.description
    [line] = engine.status().errors
    assert line.startswith(error) and line.endswith("selecting with GrabCut")


def test_a_folder_of_the_other_model_type_is_refused_in_one_line(tiny_edgetam_dir: Path) -> None:  # noqa: F811
    segmenter = load_segmenter("sam2.1-tiny", tiny_edgetam_dir)
    segmenter.load()
    assert segmenter.load_error is not None and "edgetam" in segmenter.load_error and "not sam2" in segmenter.load_error

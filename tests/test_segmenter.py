"""Selecting objects: SAM loading and its per-image embedding cache, prompts, the GrabCut fallback."""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

from editor.models import sam_loader
from editor.engine.ops import Engine
from editor.core.errors import EditorError, SelectionError
from editor.core.prompts import Prompts, SelectionPart, parse_box, parse_point
from editor.models.base import ImageExpired, ImageRef, Segmentation, Segmenter
from editor.models.opencv import GrabCutSegmenter
from editor.models.sam import SamSegmenter
from editor.models.sam_loader import build_sam, infer_architecture, load_sam, read_checkpoint


def fresh_segmenter(path: Path, embeddings: float = 8) -> tuple[SamSegmenter, list[int]]:
    """A segmenter of its own (not the shared engine's), its cache the size of `embeddings` of
    the tiny model's image embeddings, and a live count of image embeddings computed."""
    model, _ = load_sam(path, "auto", "cpu")
    calls = [0]

    def count(module, inputs, output):  # type: ignore[no-untyped-def]
        calls[0] += 1

    model.image_encoder.register_forward_hook(count)
    return SamSegmenter(model, "tiny sam", int(embeddings * tiny_embedding_bytes(model))), calls


def tiny_embedding_bytes(model: torch.nn.Module) -> int:
    """The bytes of one image embedding: out_chans x grid x grid floats."""
    side = model.image_encoder.img_size // model.image_encoder.patch_embed.proj.kernel_size[0]
    return model.image_encoder.neck[0].out_channels * side * side * 4


def select(segmenter: Segmenter, image: np.ndarray, prompts: Prompts) -> np.ndarray:
    """Prepare, then one click: the mask the engine would show."""
    return segmenter.segment(segmenter.prepare(image), prompts).mask


def random_image(seed: int, height: int = 48, width: int = 64) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def disc_mask(height: int = 240, width: int = 320) -> np.ndarray:
    yy, xx = np.mgrid[0:height, 0:width]
    return (xx - 160) ** 2 + (yy - 120) ** 2 < 50**2


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


def one_line_editor_error(call) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(EditorError) as info:
        call()
    message = str(info.value)
    assert message and "\n" not in message, f"not one line: {message!r}"
    return message


# --- SAM masks and the embedding cache -------------------------------------------------------------


@pytest.mark.parametrize("height, width", [(48, 64), (100, 37), (1, 5), (300, 300)])
def test_sam_mask_has_the_image_size_and_is_0_or_255(tiny_sam_path: Path, height: int, width: int) -> None:
    segmenter, _ = fresh_segmenter(tiny_sam_path)
    image = random_image(1, height, width)
    prompts = Prompts().add_point(width / 2, height / 2).add_point(0, 0, positive=False)
    for p in (prompts, Prompts(box=(0, 0, width, height)), Prompts(box=(0, 0, width, height)).add_point(0, 0)):
        mask = select(segmenter, image, p.validated(width, height))
        assert mask.shape == (height, width) and mask.dtype == np.uint8
        assert set(np.unique(mask).tolist()) <= {0, 255}


def test_ten_clicks_compute_the_image_embedding_once(tiny_sam_path: Path) -> None:
    segmenter, calls = fresh_segmenter(tiny_sam_path)
    image = random_image(2)
    ref = segmenter.prepare(image)
    assert calls[0] == 1 and (ref.width, ref.height) == (64, 48)
    prompts = Prompts()
    rng = np.random.default_rng(0)
    for i in range(10):
        prompts = prompts.add_point(float(rng.uniform(0, 64)), float(rng.uniform(0, 48)), positive=i % 3 != 2)
        assert segmenter.prepare(image.copy()) == ref  # same content, new array: the same image
        mask = segmenter.segment(ref, prompts.validated(64, 48)).mask
        assert mask.shape == (48, 64)
    assert calls[0] == 1


def test_a_new_image_version_gets_a_new_embedding(tiny_sam_path: Path) -> None:
    segmenter, calls = fresh_segmenter(tiny_sam_path)
    image = random_image(3)
    prompts = Prompts().add_point(10, 10)
    select(segmenter, image, prompts)
    edited = image.copy()
    edited[5, 5] = 255 - edited[5, 5]  # one pixel changed: a new version of the photo
    select(segmenter, edited, prompts)
    assert calls[0] == 2
    select(segmenter, image, prompts)  # going back (undo) reuses the cached embedding
    assert calls[0] == 2
    select(segmenter, image[:, :-1].copy(), Prompts().add_point(10, 10))  # another size
    assert calls[0] == 3


def test_embedding_cache_evicts_the_least_recently_used(tiny_sam_path: Path) -> None:
    segmenter, calls = fresh_segmenter(tiny_sam_path, embeddings=2)
    a, b, c = random_image(10), random_image(11), random_image(12)
    for image in (a, b, a, c):  # a is used again before c arrives, so b is the one evicted
        segmenter.prepare(image)
    assert calls[0] == 3
    segmenter.prepare(a)
    segmenter.prepare(c)
    assert calls[0] == 3
    segmenter.prepare(b)
    assert calls[0] == 4


def test_many_photos_never_hold_more_than_the_cache_budget(tiny_sam_path: Path) -> None:
    """Embeddings and click results share one byte budget, however many photos are clicked on."""
    segmenter, calls = fresh_segmenter(tiny_sam_path, embeddings=3.5)
    budget = int(3.5 * tiny_embedding_bytes(segmenter.model))
    photos = [random_image(100 + i, 40 + i, 50) for i in range(20)]
    for photo in photos:
        prompts = Prompts()
        for k in range(4):
            prompts = prompts.add_point(5 + 9 * k, 4 + 7 * k, positive=k != 2)
            select(segmenter, photo, prompts)
            assert 0 < segmenter.cached_bytes <= budget
    assert calls[0] == 20
    select(segmenter, photos[-1], Prompts().add_point(5, 4))  # the latest photo is still there
    assert calls[0] == 20
    select(segmenter, photos[0], Prompts().add_point(5, 4))  # the first one made room long ago
    assert calls[0] == 21


def test_bytes_lru_keeps_the_most_recent_within_its_budget() -> None:
    from editor.models.embedding_cache import BytesLRU

    cache = BytesLRU(100)
    for key, size in [("a", 40), ("b", 40), ("c", 30)]:
        cache.put(key, key.upper(), size)
    assert cache.get("a") is None and cache.get("b") == "B" and cache.held == 70  # a went to make room for c
    cache.put("d", "D", 30)  # fits beside b and c
    cache.get("b")
    cache.put("e", "E", 40)  # c, then d, the least recently used, go
    assert [cache.get(k) for k in "bcde"] == ["B", None, None, "E"] and cache.held == 80
    cache.put("huge", "H", 101)  # larger than the whole budget: not kept, nothing released for it
    assert cache.get("huge") is None and cache.held == 80 and len(cache) == 2
    cache.put("b", "B2", 10)  # replacing a key releases its old size
    assert cache.get("b") == "B2" and cache.held == 50


def test_cached_and_fresh_embeddings_give_the_same_mask(tiny_sam_path: Path) -> None:
    segmenter, _ = fresh_segmenter(tiny_sam_path)
    image = random_image(4)
    prompts = Prompts().add_point(20, 30).add_point(40, 10, positive=False)
    first = select(segmenter, image, prompts)
    assert np.array_equal(select(segmenter, image, prompts), first)
    other, _ = fresh_segmenter(tiny_sam_path)
    assert np.array_equal(select(other, image, prompts), first)


def select_retrying(segmenter: Segmenter, image: np.ndarray, prompts: Prompts) -> np.ndarray:
    """`select`, preparing again while other threads keep releasing the image (a tiny cache)."""
    for _ in range(20):
        try:
            return select(segmenter, image, prompts)
        except ImageExpired:
            pass
    raise AssertionError("the image was released before every click")


def test_concurrent_segmentation_matches_serial(tiny_sam_path: Path) -> None:
    images = [random_image(20 + i, 40 + 8 * i, 70 - 6 * i) for i in range(6)]
    prompts = [Prompts().add_point(5 + 3 * i, 7 + 2 * i).add_point(30, 20 + i, positive=False) for i in range(6)]
    serial_segmenter, _ = fresh_segmenter(tiny_sam_path)
    serial = [select(serial_segmenter, img, p) for img, p in zip(images, prompts)]

    shared, calls = fresh_segmenter(tiny_sam_path, embeddings=3)  # small: evictions under load too
    barrier = threading.Barrier(6)

    def work(i: int) -> list[np.ndarray]:
        barrier.wait()
        return [select_retrying(shared, images[(i + k) % 6], prompts[(i + k) % 6]) for k in range(3)]

    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(work, range(6)))
    for i, masks in enumerate(results):
        for k, mask in enumerate(masks):
            assert np.array_equal(mask, serial[(i + k) % 6])
    assert calls[0] >= 6


def test_each_click_runs_the_mask_decoder_once_and_matches_a_full_replay(tiny_sam_path: Path) -> None:
    segmenter, _ = fresh_segmenter(tiny_sam_path)
    decodes = [0]
    segmenter.model.mask_decoder.register_forward_hook(lambda *_: decodes.__setitem__(0, decodes[0] + 1))
    image = random_image(5, 60, 80)
    prompts, masks_seen = Prompts(box=(5, 5, 60, 50)), []
    for i in range(6):
        prompts = prompts.add_point(10 + 8 * i, 12 + 5 * i, positive=i % 3 != 2)
        decodes[0] = 0
        masks_seen.append(select(segmenter, image, prompts))
        assert decodes[0] == (2 if i == 0 else 1), f"click {i + 1}"  # the box alone, then box + point
    replayed, _ = fresh_segmenter(tiny_sam_path)  # nothing cached: the whole sequence at once
    assert np.array_equal(select(replayed, image, prompts), masks_seen[-1])
    decodes[0] = 0
    select(segmenter, image, Prompts(box=(5, 5, 60, 50)).add_point(10, 12))  # undo back to the first click
    assert decodes[0] == 0


def test_previous_logits_refine_the_next_click_with_one_decode(tiny_sam_path: Path) -> None:
    """A client that keeps the last click's logits gets the replayed mask from one decoder run,
    even from a segmenter that has decoded nothing for this image yet."""
    clicks, _ = fresh_segmenter(tiny_sam_path)
    image = random_image(15, 60, 80)
    ref = clicks.prepare(image)
    first = Prompts().add_point(20, 20)
    second = first.add_point(50, 40).add_point(70, 10, positive=False)
    last = clicks.segment(ref, first)
    for n in (2, 3):
        last = clicks.segment(ref, Prompts(second.points[:n], second.labels[:n]), previous=last.logits)
    assert last.logits is not None and last.logits.ndim == 2 and last.logits.dtype == np.float32

    fresh, _ = fresh_segmenter(tiny_sam_path)
    decodes = [0]
    fresh.model.mask_decoder.register_forward_hook(lambda *_: decodes.__setitem__(0, decodes[0] + 1))
    fresh_ref = fresh.prepare(image)
    before_last = clicks.segment(ref, Prompts(second.points[:2], second.labels[:2]))
    refined = fresh.segment(fresh_ref, second, previous=before_last.logits)
    assert decodes[0] == 1
    assert np.array_equal(refined.mask, last.mask)
    assert np.array_equal(refined.mask, select(clicks, image, second))  # the cached replay agrees


def test_a_released_embedding_raises_image_expired_until_prepared_again(tiny_sam_path: Path) -> None:
    segmenter, calls = fresh_segmenter(tiny_sam_path, embeddings=1.5)
    a, b = random_image(16), random_image(17)
    ref_a = segmenter.prepare(a)
    segmenter.prepare(b)  # the cache holds one embedding: a's makes room
    with pytest.raises(ImageExpired):
        segmenter.segment(ref_a, Prompts().add_point(5, 5))
    assert segmenter.prepare(a) == ref_a and calls[0] == 3
    assert segmenter.segment(ref_a, Prompts().add_point(5, 5)).mask.shape == (48, 64)


def test_grabcut_names_photos_weakly_and_expires_once_they_are_gone() -> None:
    import gc

    grabcut = GrabCutSegmenter()
    image = random_image(18)
    ref = grabcut.prepare(image)
    assert ref == ImageRef(ref.key, 64, 48)
    kept = grabcut.segment(ref, Prompts().add_point(30, 20))
    assert kept.mask.shape == (48, 64) and kept.logits is None
    del image
    gc.collect()
    with pytest.raises(ImageExpired):
        grabcut.segment(ref, Prompts().add_point(30, 20))


class ForgetfulSegmenter:
    """GrabCut that releases each photo once right after preparing it, as a busy shared cache may."""

    description = "forgetful grabcut"
    load_error = None

    def __init__(self) -> None:
        self.inner = GrabCutSegmenter()
        self.prepared = 0
        self.forgotten: set[str] = set()

    def load(self) -> None:
        pass

    def prepare(self, image: np.ndarray) -> ImageRef:
        self.prepared += 1
        return self.inner.prepare(image)

    def segment(self, ref: ImageRef, prompts: Prompts, previous: np.ndarray | None = None) -> Segmentation:
        if ref.key not in self.forgotten:
            self.forgotten.add(ref.key)
            raise ImageExpired("released")
        return self.inner.segment(ref, prompts, previous)


def test_the_engine_prepares_a_released_photo_again_once(fallback_engine: Engine, photo: np.ndarray) -> None:
    forgetful = ForgetfulSegmenter()
    engine = replace_segmenter(fallback_engine, forgetful)
    prompts = Prompts().add_point(160, 120)
    assert np.array_equal(engine.select(photo, prompts), select(GrabCutSegmenter(), photo, prompts))
    assert forgetful.prepared == 2
    parts = [SelectionPart(prompts), SelectionPart(Prompts(box=(0, 0, 40, 40)), subtract=True)]
    forgetful.prepared = 0
    engine.select_parts(photo, parts)
    assert forgetful.prepared == 1, "one photo, several parts: prepared once"


def replace_segmenter(engine: Engine, segmenter: Segmenter) -> Engine:
    return Engine(segmenter, engine.inpainter, engine.backends, engine.defaults, engine.composite,
                  engine.erase_config, engine.detector, engine.limits, prefill=engine.prefill)


def test_the_mask_matches_segment_anythings_own_postprocessing(tiny_sam_path: Path) -> None:
    """The full-size upscaling (OpenCV) agrees with SamPredictor's (torch) on all but edge pixels."""
    from segment_anything import SamPredictor

    segmenter, _ = fresh_segmenter(tiny_sam_path)
    image = random_image(6, 300, 500)
    prompts = Prompts(box=(50, 40, 400, 260))
    ours = select(segmenter, image, prompts) > 0
    predictor = SamPredictor(segmenter.model)
    predictor.set_image(image)
    theirs, _, _ = predictor.predict(box=np.array(prompts.box), multimask_output=False)
    assert ours.any() and np.mean(ours != theirs[0]) < 0.002


def test_read_only_versions_are_hashed_once_and_writeable_arrays_every_time(monkeypatch: pytest.MonkeyPatch) -> None:
    import editor.models.embedding_cache as segmenter_module

    hashed = []
    real = segmenter_module.image_key
    monkeypatch.setattr(segmenter_module, "image_key", lambda image: hashed.append(1) or real(image))
    keys = segmenter_module.ImageKeys(size=1)
    frozen = random_image(7)
    frozen.flags.writeable = False
    assert keys(frozen) == keys(frozen) == real(frozen) and len(hashed) == 1
    writeable = random_image(7)
    assert keys(writeable) == keys(writeable) == real(frozen) and len(hashed) == 3
    assert keys(frozen) == real(frozen) and len(hashed) == 3, "writeable arrays are not remembered"
    other = random_image(8)
    other.flags.writeable = False
    keys(other)
    assert keys(frozen) == real(frozen) and len(hashed) == 5, "only the last `size` read-only arrays are remembered"


def test_sam_loads_on_first_use_or_warm_up(empty_models_dir: Path, tiny_sam_path: Path) -> None:
    from editor.build import build_engine
    from tests.conftest import tiny_config

    engine = build_engine(tiny_config(empty_models_dir, f"segmenter.model={tiny_sam_path}"), show_progress=False)
    assert not engine.segmenter.loaded, "building the engine loads nothing"
    engine.select(random_image(8), Prompts().add_point(3, 4))
    assert engine.segmenter.loaded
    warm = build_engine(tiny_config(empty_models_dir, f"segmenter.model={tiny_sam_path}"), show_progress=False)
    warm.warm_up()
    assert warm.segmenter.loaded


def test_a_broken_checkpoint_selects_with_grabcut_and_says_why_in_one_line(empty_models_dir: Path,
                                                                            tmp_path: Path) -> None:
    from editor.build import build_engine
    from tests.conftest import tiny_config

    broken = tmp_path / "sam_broken.pth"
    broken.write_bytes(b"not a checkpoint")
    engine = build_engine(tiny_config(empty_models_dir, f"segmenter.model={broken}"),
                          show_progress=False)
    image = random_image(9)
    mask = engine.select(image, Prompts().add_point(3, 4))
    assert np.array_equal(mask, select(GrabCutSegmenter(), image, Prompts().add_point(3, 4)))
    [error] = engine.status().errors
    assert "sam_broken.pth" in error and "GrabCut" in error and "\n" not in error
    assert engine.status().segmenter.startswith("grabcut")


# --- loading checkpoints ---------------------------------------------------------------------------


def test_vit_b_architecture_is_read_from_its_shapes() -> None:
    from segment_anything import sam_model_registry

    torch.manual_seed(0)
    state = sam_model_registry["vit_b"]().state_dict()
    arch = infer_architecture(state)
    assert arch.model_type == "vit_b"
    assert (arch.embed_dim, arch.depth, arch.num_heads) == (768, 12, 12)
    assert arch.global_attn_indexes == (2, 5, 8, 11)
    assert (arch.window_size, arch.patch_size, arch.img_size, arch.out_chans) == (14, 16, 1024, 256)
    assert (arch.decoder_depth, arch.decoder_mlp_dim, arch.num_multimask_outputs) == (2, 2048, 3)


@pytest.mark.parametrize("model_type, embed_dim, depth, global_blocks", [
    ("vit_b", 768, 12, (2, 5, 8, 11)),
    ("vit_l", 1024, 24, (5, 11, 17, 23)),
    ("vit_h", 1280, 32, (7, 15, 23, 31)),
])
def test_every_official_architecture_is_recognised_and_rebuilt(model_type: str, embed_dim: int, depth: int,
                                                               global_blocks: tuple[int, ...]) -> None:
    """On PyTorch's meta device (shapes without memory), so the big models cost no time."""
    from segment_anything import sam_model_registry

    with torch.device("meta"):
        official = sam_model_registry[model_type]().state_dict()
        arch = infer_architecture(official)
        rebuilt = build_sam(arch).state_dict()
    assert arch.model_type == model_type
    assert (arch.embed_dim, arch.depth, arch.global_attn_indexes) == (embed_dim, depth, global_blocks)
    assert {k: tuple(v.shape) for k, v in rebuilt.items()} == {k: tuple(v.shape) for k, v in official.items()}


def test_tiny_checkpoint_loads_as_custom_with_its_exact_layout(tiny_sam_path: Path) -> None:
    state = read_checkpoint(tiny_sam_path)
    arch = infer_architecture(state)
    assert arch.model_type.startswith("custom")
    rebuilt = build_sam(arch).state_dict()
    assert {k: tuple(v.shape) for k, v in rebuilt.items()} == {k: tuple(v.shape) for k, v in state.items()}
    model, model_type = load_sam(tiny_sam_path, "auto", "cpu")
    assert model_type.startswith("custom") and not model.training
    assert torch.equal(model.image_encoder.patch_embed.proj.weight, state["image_encoder.patch_embed.proj.weight"])


def test_checkpoint_wrapped_in_a_model_key_and_legacy_format_load(tiny_sam_path: Path, tmp_path: Path) -> None:
    state = read_checkpoint(tiny_sam_path)
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"model": state, "epoch": 3}, wrapped)
    legacy = tmp_path / "legacy.pth"
    torch.save(dict(state), legacy, _use_new_zipfile_serialization=False)  # cannot be memory-mapped
    for path in (wrapped, legacy):
        model, _ = load_sam(path, "auto", "cpu")
        assert torch.equal(model.mask_decoder.mask_tokens.weight, state["mask_decoder.mask_tokens.weight"])


@pytest.mark.parametrize("model_type", ["vit_b", "vit_l", "vit_h"])
def test_model_type_mismatch_is_an_error(tiny_sam_path: Path, model_type: str) -> None:
    message = one_line_editor_error(lambda: load_sam(tiny_sam_path, model_type, "cpu"))
    assert model_type in message and tiny_sam_path.name in message


def test_foreign_corrupt_and_missing_files_are_one_line_errors(tiny_sam_path: Path, tmp_path: Path) -> None:
    not_sam = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(3, 3)}, not_sam)
    assert "not a Segment Anything checkpoint" in one_line_editor_error(lambda: load_sam(not_sam, "auto", "cpu"))

    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    assert "garbage.pth" in one_line_editor_error(lambda: load_sam(garbage, "auto", "cpu"))

    data = tiny_sam_path.read_bytes()
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(data[: len(data) // 2])
    assert "truncated.pth" in one_line_editor_error(lambda: load_sam(truncated, "auto", "cpu"))

    text = tmp_path / "readme.pth"
    text.write_text("download the checkpoint from ...\n" * 10)
    one_line_editor_error(lambda: load_sam(text, "auto", "cpu"))

    assert "not found" in one_line_editor_error(lambda: load_sam(tmp_path / "absent.pth", "auto", "cpu"))

    list_file = tmp_path / "list.pth"
    torch.save([torch.zeros(2)], list_file)
    one_line_editor_error(lambda: load_sam(list_file, "auto", "cpu"))


def test_checkpoint_with_missing_or_extra_tensors_is_refused(tiny_sam_path: Path, tmp_path: Path) -> None:
    state = dict(read_checkpoint(tiny_sam_path))
    partial = {k: v for k, v in state.items() if not k.startswith("mask_decoder.iou_prediction_head")}
    path = tmp_path / "partial.pth"
    torch.save(partial, path)
    one_line_editor_error(lambda: load_sam(path, "auto", "cpu"))
    extra = dict(state, **{"image_encoder.extra.weight": torch.zeros(2)})
    path = tmp_path / "extra.pth"
    torch.save(extra, path)
    assert "extra.pth" in one_line_editor_error(lambda: load_sam(path, "auto", "cpu"))


def test_checkpoints_are_loaded_safely_onto_the_cpu(tiny_sam_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """map_location puts CUDA-saved tensors on the CPU; weights_only refuses pickled code."""
    real_load = torch.load
    seen: list[dict] = []

    def recording_load(*args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(kwargs)
        if kwargs.get("mmap"):
            raise RuntimeError("simulated: this file cannot be memory-mapped")
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", recording_load)
    model, _ = load_sam(tiny_sam_path, "auto", "cpu")
    assert len(seen) == 2  # the mmap attempt, then the plain fallback
    for kwargs in seen:
        assert kwargs.get("map_location") == "cpu"
        assert kwargs.get("weights_only") is True
    assert next(model.parameters()).device.type == "cpu"


def test_pickled_code_in_a_checkpoint_is_not_run(tmp_path: Path) -> None:
    marker = tmp_path / "code-ran"

    class Evil:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (marker.touch, ())

    path = tmp_path / "evil.pth"
    torch.save({"image_encoder.patch_embed.proj.weight": Evil()}, path)
    message = one_line_editor_error(lambda: sam_loader.read_checkpoint(path))
    assert not marker.exists()
    assert "evil.pth" in message and "unsafe" in message and "not loaded" in message
    assert "weights_only" not in message and message.endswith(("loaded", "loaded.", ")")), message


# --- prompt validation -------------------------------------------------------------------------------


@pytest.mark.parametrize("prompts", [
    Prompts().add_point(64, 10),  # x == width is outside
    Prompts().add_point(-1, 10),
    Prompts().add_point(10, 48),
    Prompts().add_point(10, 10).add_point(100, 10, positive=False),
    Prompts(box=(0, 0, 65, 48)),
    Prompts(box=(-2, 0, 10, 10)),
])
def test_prompts_outside_the_image_are_refused(sam_sd2_engine: Engine, prompts: Prompts) -> None:
    with pytest.raises(SelectionError, match="outside"):
        sam_sd2_engine.select(random_image(0), prompts)


def test_empty_box_and_only_negative_points_are_refused(sam_sd2_engine: Engine, fallback_engine: Engine) -> None:
    image = random_image(0)
    for engine in (sam_sd2_engine, fallback_engine):
        with pytest.raises(SelectionError, match="empty"):
            engine.select(image, Prompts(box=(10, 10, 10, 30)))
        with pytest.raises(SelectionError, match="empty"):
            engine.select(image, Prompts(box=(10, 10, 30, 10.5)))
        with pytest.raises(SelectionError, match="positive"):
            engine.select(image, Prompts().add_point(5, 5, positive=False).add_point(9, 9, positive=False))
        with pytest.raises(SelectionError):
            engine.select(image, Prompts())


def test_swapped_box_corners_are_put_in_order(sam_sd2_engine: Engine) -> None:
    assert Prompts(box=(50, 40, 10, 5)).validated(64, 48).box == (10, 5, 50, 40)
    assert Prompts(box=(10, 40, 50, 5)).validated(64, 48).box == (10, 5, 50, 40)
    image = random_image(6)
    ordered = sam_sd2_engine.select(image, Prompts(box=(10, 5, 50, 40)))
    assert np.array_equal(sam_sd2_engine.select(image, Prompts(box=(50, 40, 10, 5))), ordered)
    assert np.array_equal(sam_sd2_engine.select(image, Prompts(box=(50, 5, 10, 40))), ordered)


def test_points_on_the_last_pixel_and_a_full_box_are_inside(sam_sd2_engine: Engine) -> None:
    image = random_image(7)
    assert sam_sd2_engine.select(image, Prompts().add_point(63.5, 47.9)).shape == (48, 64)
    assert sam_sd2_engine.select(image, Prompts(box=(0, 0, 64, 48))).shape == (48, 64)


def test_parse_point_and_box() -> None:
    assert parse_point("12,34.5") == (12.0, 34.5)
    assert parse_box("1,2,3,4") == (1.0, 2.0, 3.0, 4.0)
    for bad in ("12", "1,2,3", "a,b", "nan,1", "", "1;2"):
        with pytest.raises(SelectionError):
            parse_point(bad)
    with pytest.raises(SelectionError):
        parse_box("1,2,3")


# --- the GrabCut fallback ---------------------------------------------------------------------------


def test_grabcut_click_selects_the_disc(fallback_engine: Engine, photo: np.ndarray) -> None:
    assert isinstance(fallback_engine.segmenter, GrabCutSegmenter)
    mask = fallback_engine.select(photo, Prompts().add_point(160, 120))
    assert mask.shape == photo.shape[:2] and set(np.unique(mask).tolist()) <= {0, 255}
    assert iou(mask > 0, disc_mask()) > 0.8


def test_grabcut_box_selects_the_disc(fallback_engine: Engine, photo: np.ndarray) -> None:
    mask = fallback_engine.select(photo, Prompts(box=(100, 60, 220, 180)))
    assert iou(mask > 0, disc_mask()) > 0.8
    assert not (mask[:55] > 0).any() and not (mask[:, :95] > 0).any()  # nothing outside the box


def test_grabcut_negative_point_is_excluded(fallback_engine: Engine, photo: np.ndarray) -> None:
    positive = Prompts().add_point(160, 120)
    assert fallback_engine.select(photo, positive)[120, 190] == 255
    mask = fallback_engine.select(photo, positive.add_point(190, 120, positive=False))
    assert mask[120, 190] == 0
    assert mask[120, 160] == 255


def test_grabcut_on_a_large_photo_returns_full_resolution(fallback_engine: Engine) -> None:
    height, width = 1500, 2000
    yy, xx = np.ogrid[0:height, 0:width]
    disc = (xx - 1200) ** 2 + (yy - 700) ** 2 < 300**2
    image = np.full((height, width, 3), (40, 90, 160), np.uint8)
    image += np.random.default_rng(0).integers(0, 12, image.shape, dtype=np.uint8)
    image[disc] = (230, 200, 20)
    mask = fallback_engine.select(image, Prompts().add_point(1200, 700))
    assert mask.shape == (height, width)
    assert iou(mask > 0, disc) > 0.9

"""Select by name: a tiny random Grounding DINO, saved and loaded through the real code, then SAM on its boxes.

Random weights give meaningless boxes and scores: these tests check behaviour (queries reach the
model, boxes land in the photo's pixels, thresholds filter, instances join), never quality.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from transformers.models.grounding_dino.modeling_grounding_dino import GroundingDinoObjectDetectionOutput
from transformers.models.owlv2.modeling_owlv2 import Owlv2ObjectDetectionOutput

from editor.core import masks
from editor.models import weights
from editor.build import build_engine, describe, hub_entry, plan_backends
from editor.core.prompts import parse_query
from editor.models.detector import Thresholds, TransformersDetector, clip_box, post_process
from editor.engine.ops import DETECTOR_DOWNLOAD_HINT, Engine
from editor.core.errors import ConfigError, EditorError, ModelUnavailableError, SelectionError
from editor.core.prompts import Detection, Prompts, SelectionPart, detected_parts, refine_detected, route_point
from editor.session.store import SessionStore
from tests.conftest import tiny_config
from tests.tiny_models import DETECTOR_TEXT_LENGTH

EVERYTHING = ("detector.box_threshold=0", "detector.text_threshold=0", "detector.max_detections=4")


def detector_engine(models_dir: Path, sam: Path, detector: Path, *overrides: str) -> Engine:
    config = tiny_config(models_dir, f"segmenter.model={sam}", f"detector.model={detector}", *overrides)
    return build_engine(config, show_progress=False)


@pytest.fixture(scope="module")
def engine(empty_models_dir: Path, tiny_sam_path: Path, tiny_detector_dir: Path) -> Engine:
    """Thresholds at 0, so that the random detector reports every slot it has."""
    return detector_engine(empty_models_dir, tiny_sam_path, tiny_detector_dir, *EVERYTHING)


def tokens_seen(engine: Engine, image: np.ndarray, query: str) -> list[str]:
    """The tokens the model's forward pass received for `query`."""
    assert isinstance(engine.detector, TransformersDetector)
    processor, model = engine.detector.load()
    seen: list[torch.Tensor] = []
    hook = model.register_forward_pre_hook(lambda module, args, kwargs: seen.append(kwargs["input_ids"]),
                                           with_kwargs=True)
    try:
        engine.detect(image, query)
    finally:
        hook.remove()
    assert len(seen) == 1
    return processor.tokenizer.convert_ids_to_tokens(seen[0][0].tolist())


# --- queries ---------------------------------------------------------------------------------


def test_queries_are_split_lowered_and_deduplicated() -> None:
    assert parse_query("The Dog") == ["the dog"]
    assert parse_query("person, dog.  Person;car\n") == ["person", "dog", "car"]
    for empty in ("", "  ", " , . ;"):
        with pytest.raises(SelectionError, match="type what to select"):
            parse_query(empty)
    with pytest.raises(SelectionError, match="too long"):
        parse_query("dog, " * 100)


def test_the_query_reaches_the_model_as_grounding_dino_phrases(engine: Engine, photo: np.ndarray) -> None:
    assert tokens_seen(engine, photo, "Dog, PERSON") == ["[CLS]", "dog", ".", "person", ".", "[SEP]"]
    assert tokens_seen(engine, photo, "a red disc") == ["[CLS]", "a", "red", "disc", ".", "[SEP]"]


def test_the_detector_loads_once_on_first_use(empty_models_dir: Path, tiny_sam_path: Path, tiny_detector_dir: Path,
                                              photo: np.ndarray) -> None:
    engine = detector_engine(empty_models_dir, tiny_sam_path, tiny_detector_dir, *EVERYTHING)
    assert isinstance(engine.detector, TransformersDetector) and engine.detector.path == tiny_detector_dir
    assert not engine.detector.loaded, "building the engine must not load the detector"
    engine.detect(photo, "dog")
    loaded = engine.detector.load()
    engine.detect(photo, "cat")
    assert engine.detector.loaded and engine.detector.load() is loaded
    assert str(tiny_detector_dir) in engine.backends.detector and "fp32 on cpu" in engine.backends.detector


# --- boxes in the photo's pixels ------------------------------------------------------------


def crafted_output(slots: list[tuple[float, float, float, float]], token: int) -> GroundingDinoObjectDetectionOutput:
    """Model outputs with boxes (cx, cy, w, h relative to the photo) that score high on one token."""
    logits = torch.full((1, len(slots), DETECTOR_TEXT_LENGTH), -20.0)
    logits[0, :, token] = torch.linspace(8.0, 4.0, len(slots))  # best first, all above 0.98
    return GroundingDinoObjectDetectionOutput(logits=logits, pred_boxes=torch.tensor([slots]))


@pytest.mark.parametrize("height, width", [(240, 320), (37, 1000), (1000, 37), (3000, 4000), (1, 1)])
def test_relative_boxes_become_photo_pixels_at_any_size(engine: Engine, height: int, width: int) -> None:
    processor, _ = engine.detector.load()  # type: ignore[union-attr]
    input_ids = processor.tokenizer("dog. person.", return_tensors="pt")["input_ids"]
    person = input_ids[0].tolist().index(processor.tokenizer.convert_tokens_to_ids("person"))
    slots = [(0.5, 0.5, 0.5, 0.5), (0.2, 0.7, 0.2, 0.4), (1.0, 1.0, 0.5, 0.5)]  # the last one sticks out
    found = post_process(processor, crafted_output(slots, person), input_ids, ["dog", "person"], (height, width),
                         Thresholds(0.3, 0.3, 10), sentence=True)
    expected = [(0.25 * width, 0.25 * height, 0.75 * width, 0.75 * height),
                (0.1 * width, 0.5 * height, 0.3 * width, 0.9 * height),
                (0.75 * width, 0.75 * height, width, height)]  # clipped to the photo
    expected = [box for box in expected if box[2] - box[0] >= 1 and box[3] - box[1] >= 1]
    assert np.allclose([d.box for d in found], expected, rtol=1e-4, atol=1e-3) and len(found) == len(expected)
    assert [d.label for d in found] == ["person"] * len(expected)


def test_owlv2_gets_the_queries_as_a_list_and_its_square_padding_is_undone(
        empty_models_dir: Path, tiny_owlv2_dir: Path) -> None:
    """OWLv2 pads the photo to a square at the bottom and right: its relative boxes are of that square."""
    engine = build_engine(tiny_config(empty_models_dir, f"detector.model={tiny_owlv2_dir}", *EVERYTHING),
                          show_progress=False)
    processor, model = engine.detector.load()  # type: ignore[union-attr]
    assert model.config.model_type == "owlv2"
    seen: list[torch.Tensor] = []
    hook = model.register_forward_pre_hook(lambda module, args, kwargs: seen.append(kwargs["input_ids"]),
                                           with_kwargs=True)
    try:
        engine.detect(np.zeros((100, 300, 3), np.uint8), "Dog, cat")
    except SelectionError:
        pass  # random weights may find nothing usable; what reached the model is the point here
    finally:
        hook.remove()
    rows = [processor.tokenizer.decode(row, skip_special_tokens=True).strip() for row in seen[0].tolist()]
    assert rows == ["dog", "cat"]
    logits = torch.tensor([[[5.0, -5.0], [-5.0, 3.0], [-9.0, -9.0]]])  # a dog, a cat, nothing
    boxes = torch.tensor([[[0.5, 1 / 6, 0.5, 1 / 6], [0.25, 0.25, 0.1, 0.2], [0.5, 0.5, 0.2, 0.2]]])  # of 300x300
    found = post_process(processor, Owlv2ObjectDetectionOutput(logits=logits, pred_boxes=boxes), seen[0],
                         ["dog", "cat"], (100, 300), Thresholds(0.5, 0.5, 10), sentence=False)
    assert [d.label for d in found] == ["dog", "cat"]
    assert np.allclose([d.box for d in found], [(75, 25, 225, 75), (60, 45, 90, 100)], atol=1e-3)


def test_real_detections_lie_inside_photos_of_any_aspect(engine: Engine) -> None:
    rng = np.random.default_rng(1)
    for height, width in [(240, 320), (90, 700), (700, 90), (33, 33)]:
        image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        found = engine.detect(image, "dog, cat")
        assert 0 < len(found) <= 4
        for d in found:
            x1, y1, x2, y2 = d.box
            assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height and x2 - x1 >= 1 and y2 - y1 >= 1
            assert d.label in ("dog", "cat") and 0 <= d.score <= 1
        scores = [d.score for d in found]
        assert scores == sorted(scores, reverse=True)


def test_clip_box_orders_corners_and_drops_boxes_outside() -> None:
    assert clip_box(np.array([50.0, 40.0, -5.0, 10.0]), (30, 40)) == (0.0, 10.0, 40.0, 30.0)
    assert clip_box(np.array([45.0, 5.0, 60.0, 20.0]), (30, 40)) is None


# --- thresholds ------------------------------------------------------------------------------


def test_box_threshold_keeps_only_higher_scores(empty_models_dir: Path, tiny_sam_path: Path,
                                                tiny_detector_dir: Path, engine: Engine, photo: np.ndarray) -> None:
    everything = [d.score for d in engine.detect(photo, "dog")]
    assert len(everything) > 2
    cut = float(np.median(everything))
    stricter = detector_engine(empty_models_dir, tiny_sam_path, tiny_detector_dir, *EVERYTHING,
                               f"detector.box_threshold={cut}")
    kept = [d.score for d in stricter.detect(photo, "dog")]
    assert kept and all(score > cut for score in kept)
    assert len(kept) == sum(score > cut for score in everything)


def test_max_detections_keeps_the_best(empty_models_dir: Path, tiny_sam_path: Path, tiny_detector_dir: Path,
                                       engine: Engine, photo: np.ndarray) -> None:
    best = detector_engine(empty_models_dir, tiny_sam_path, tiny_detector_dir, *EVERYTHING,
                           "detector.max_detections=2").detect(photo, "dog")
    assert best == engine.detect(photo, "dog")[:2]


def test_nothing_above_the_threshold_is_a_clear_message(empty_models_dir: Path, tiny_sam_path: Path,
                                                        tiny_detector_dir: Path, photo: np.ndarray) -> None:
    strict = detector_engine(empty_models_dir, tiny_sam_path, tiny_detector_dir, "detector.box_threshold=1.0")
    for call in (lambda: strict.detect(photo, "dog, red disc"), lambda: strict.select_by_text(photo, "dog")):
        with pytest.raises(SelectionError) as info:
            call()
        message = str(info.value)
        assert "\n" not in message and "no dog" in message and "detector.box_threshold" in message


# --- masks -----------------------------------------------------------------------------------


def test_every_instance_is_selected_from_its_box_and_joined(engine: Engine, photo: np.ndarray) -> None:
    found = engine.select_by_text(photo, "person")
    assert len(found.detections) > 1
    assert [part.prompts.box for part in found.parts] == [d.box for d in found.detections]
    union = np.zeros(photo.shape[:2], np.uint8)
    for d in found.detections:
        union = masks.union(union, engine.select(photo, Prompts(box=d.box)))
    assert found.mask.dtype == np.uint8 and found.mask.shape == photo.shape[:2]
    assert np.array_equal(found.mask, union)
    assert found.mask.any()


def test_without_sam_each_box_goes_through_grabcut(empty_models_dir: Path, tiny_detector_dir: Path,
                                                   photo: np.ndarray) -> None:
    engine = build_engine(tiny_config(empty_models_dir, f"detector.model={tiny_detector_dir}", *EVERYTHING),
                          show_progress=False)
    assert engine.backends.segmenter.startswith("grabcut")
    x1, y1, x2, y2 = engine.detect(photo, "red disc")[0].box
    center = Prompts().add_point((x1 + x2) / 2, (y1 + y2) / 2)  # certain foreground: GrabCut keeps it
    found = engine.select_by_text(photo, "red disc", center)
    expected = engine.select(photo, Prompts(center.points, center.labels, (x1, y1, x2, y2)))
    for d in found.detections[1:]:
        expected = masks.union(expected, engine.select(photo, Prompts(box=d.box)))
    assert found.mask.any() and np.array_equal(found.mask, expected)


def test_refining_points_go_to_the_instance_whose_box_holds_them(engine: Engine, photo: np.ndarray) -> None:
    found = engine.select_by_text(photo, "dog")
    x1, y1, x2, y2 = found.detections[-1].box
    inside = ((x1 + x2) / 2, (y1 + y2) / 2)
    refined = engine.select_by_text(photo, "dog", Prompts().add_point(*inside, positive=False))
    index = route_point(refined.parts, *inside)
    assert index is not None and refined.parts[index].prompts.labels == (0,)
    assert len(refined.parts) == len(found.parts)
    expected = engine.select_parts(photo, list(refined.parts))
    assert np.array_equal(refined.mask, expected)


def test_route_and_refine_detected_parts() -> None:
    big, small = Detection((0, 0, 100, 100), "dog", 0.9), Detection((40, 40, 60, 60), "ball", 0.5)
    parts = detected_parts([big, small])
    assert [part.label for part in parts] == ["dog 0.90", "ball 0.50"]
    assert route_point(parts, 50, 50) == 1, "nested boxes: the smallest holds the point"
    assert route_point(parts, 10, 10) == 0 and route_point(parts, 150, 10) is None
    assert route_point((SelectionPart(Prompts(box=(0, 0, 9, 9))),), 5, 5) is None, "clicked boxes are not routed"
    refined = refine_detected(parts, Prompts(box=(110, 0, 150, 40)).add_point(10, 10).add_point(120, 20))
    assert refined[0].prompts.points == ((10, 10),) and refined[1].prompts.points == ()
    assert refined[2] == SelectionPart(Prompts(((120, 20),), (1,), (110, 0, 150, 40)))
    with pytest.raises(SelectionError, match="outside every detected box"):
        refine_detected(parts, Prompts().add_point(150, 150, positive=False))


# --- without the detector ---------------------------------------------------------------------


def test_without_the_detector_everything_else_works_and_it_says_how_to_get_it(fallback_engine: Engine,
                                                                              photo: np.ndarray) -> None:
    assert fallback_engine.detector is None
    line = fallback_engine.backends.detector
    assert line.startswith("none") and DETECTOR_DOWNLOAD_HINT in line
    with pytest.raises(ModelUnavailableError) as info:
        fallback_engine.select_by_text(photo, "dog")
    assert DETECTOR_DOWNLOAD_HINT in str(info.value) and "\n" not in str(info.value)
    assert fallback_engine.select(photo, Prompts(box=(100, 60, 220, 180))).any()


def test_detector_settings_are_checked(empty_models_dir: Path, tmp_path: Path) -> None:
    for override, words in [("detector.box_threshold=1.5", "[0, 1]"), ("detector.text_threshold=-0.1", "[0, 1]"),
                            ("detector.max_detections=0", "greater than 0"), ("detector.colour=red", "unknown")]:
        with pytest.raises(ConfigError, match=words.replace("[", r"\[").replace("]", r"\]")):
            tiny_config(empty_models_dir, override)
    (tmp_path / "not-a-model").mkdir()
    for model, words in [(tmp_path / "not-a-model", "config.json"), ("not a repo", "hub id")]:
        config = tiny_config(empty_models_dir, f"detector.model={model}")
        with pytest.raises(ConfigError, match=words):
            plan_backends(config)


def test_an_uncached_hub_detector_is_reported_missing(empty_models_dir: Path) -> None:
    config = tiny_config(empty_models_dir, "detector.model=someone/some-detector")
    plan = plan_backends(config)
    assert plan.detector.path is None and not plan.detector.fetch
    assert describe(plan, config).detector == (
        "none (someone/some-detector is not here; downloads are off: HF_HUB_OFFLINE=1; "
        f"run `{DETECTOR_DOWNLOAD_HINT}`)")


def test_fetch_detector_downloads_configs_tokenizer_and_safetensors(monkeypatch: pytest.MonkeyPatch,
                                                                    tmp_path: Path) -> None:
    import huggingface_hub

    from editor.models import registry

    calls: list[tuple[str, dict]] = []
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    def snapshot(repo_id: str, **kwargs: object) -> str:
        calls.append((repo_id, kwargs))
        if kwargs.get("local_files_only"):
            raise OSError("not cached")
        return f"/cache/{repo_id}"

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot)
    assert weights.fetch(registry.get("grounding-dino-tiny"), tmp_path, show_progress=False) == Path(
        "/cache/IDEA-Research/grounding-dino-tiny")
    fetched = [kwargs for repo, kwargs in calls if not kwargs.get("local_files_only")]
    assert fetched[0]["allow_patterns"] == ["*.json", "*.txt", "*.safetensors"]
    with pytest.raises(ConfigError, match=r"is not auto, .* a hub id"):
        plan_backends(tiny_config(tmp_path, f"detector.model={tmp_path / 'missing'}"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelUnavailableError, match="python -m editor download someone/uncached-detector"):
        weights.fetch(hub_entry("detector", "someone/uncached-detector"), tmp_path, cache_dir=tmp_path)
    assert [repo for repo, kwargs in calls if not kwargs.get("local_files_only")] == [
        "IDEA-Research/grounding-dino-tiny"], "offline: nothing is downloaded"


# --- the session ------------------------------------------------------------------------------


def test_session_selects_by_name_then_clicks_refine_and_undo_removes(engine: Engine, photo: np.ndarray,
                                                                     tmp_path: Path) -> None:
    session = SessionStore(tmp_path, 2**26, ttl_seconds=3600).create()
    session.open(photo)
    session.click(5, 5, "add")  # an object clicked before stays
    detections = session.select_by_name("dog", engine.detect)
    parts = session.selection.parts
    assert [p.prompts.box for p in parts[1:-1]] == [d.box for d in detections]
    assert parts[-1] == SelectionPart(), "further clicks start a new object"
    assert np.array_equal(session.selection_mask(engine.select),
                          masks.union(engine.select(photo, Prompts().add_point(5, 5)),
                                      engine.select_by_text(photo, "dog").mask))
    x1, y1, x2, y2 = detections[0].box
    inside = ((x1 + x2) / 2, (y1 + y2) / 2)
    session.click(*inside, "remove")
    index = route_point(session.selection.parts, *inside)
    assert index is not None and session.selection.parts[index].prompts.labels == (0,)
    assert len(session.selection.parts) == len(parts)
    before = session.selection.parts
    session.click(*inside, "drop")
    assert session.selection.parts == before[:index] + before[index + 1:]
    for _ in range(3):
        session.undo_click()
    assert len(session.selection.parts) == 1 and session.selection.parts[0].prompts.points == ((5, 5),)
    with pytest.raises(SelectionError, match="inside one of the boxes"):
        session.click(5, 5, "drop")  # a clicked object is not a found box


def test_select_by_text_endpoint_returns_the_mask_and_the_detections(engine: Engine, photo: np.ndarray,
                                                                    tmp_path: Path) -> None:
    import asyncio
    import shutil
    import tempfile

    from editor.core.photo_io import save_png
    from editor.ui.api import Api
    from editor.ui.uploads import upload_folder

    upload_folder().mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(dir=upload_folder())) / "photo.png"  # the API reads only uploads
    save_png(photo, path)
    api = Api(engine, tiny_config(tmp_path))
    try:
        mask, info = asyncio.run(api.select_by_text({"path": str(path)}, "dog"))
    finally:
        shutil.rmtree(path.parent)
    found = engine.select_by_text(photo, "dog")
    assert np.array_equal(mask, found.mask)
    assert [d["box"] for d in info["detections"]] == [[round(v, 1) for v in d.box] for d in found.detections]
    assert {d["label"] for d in info["detections"]} == {"dog"}

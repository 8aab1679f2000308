"""The editing operations: select, fill, erase, replace background, extend the canvas, upscale, cut out.

Each takes a full-resolution photo (`HxWx3 uint8`) and returns new arrays; inputs are never
changed. Models see only a crop around the edit at their native size; the result is pasted
back so that every pixel outside the grown and feathered mask is the input's, bit for bit.
"""
from __future__ import annotations

import itertools
import secrets
import threading
from dataclasses import dataclass, field, replace

import numpy as np

from editor.core import canvas, composite, masks
from editor.core.config import (
    CompositeConfig, EraseConfig, EraserConfig, InpaintConfig, LimitsConfig, UpscalerConfig,
)
from editor.core.errors import EditorError, ModelLoadError, ModelUnavailableError, SelectionError
from editor.core.prompts import (
    CANDIDATES, Detection, Prompts, SelectionPart, check_prompt_count, detected_parts, parse_query, refine_detected,
)
from editor.engine import strategy
from editor.engine.priority import SelectionFirst
from editor.models.base import (
    LANCZOS_NAME, Detector, Eraser, ImageExpired, ImageRef, Inpainter, InpaintRequest, Progress, Segmenter, Upscaler,
    choose_inpainter, fetch_command, inpainter_names,
)

DOWNLOAD_HINT = fetch_command("inpainter")
DETECTOR_DOWNLOAD_HINT = fetch_command("detector")
UPSCALER_DOWNLOAD_HINT = fetch_command("upscaler")
UPSCALE_FACTORS = (2, 4)
OUTPAINT_PROMPT = "seamless continuation of the scene"  # an outpaint without a prompt
OUTPAINT_BLEND_PX = 16  # the band over which a piece of the new border blends into the ones before it


def upscaled_by(model: str) -> str:
    """What enlarged an upscale's result (its metadata's "model"), said the same way on the page and
    on the command line: the model, or the plain resize that stood in for a missing one."""
    if model == LANCZOS_NAME:
        return f"a plain Lanczos resize: no upscaling model is here; get one with `{UPSCALER_DOWNLOAD_HINT}`"
    return f"upscaled by {model}"


@dataclass(frozen=True)
class EditOptions:
    """What a person may set per edit; None takes the configured default."""

    negative_prompt: str | None = None
    steps: int | None = None
    guidance: float | None = None
    strength: float | None = None
    seed: int | None = None  # None: a random seed, reported in the result
    num_images: int | None = None
    grow: int | None = None  # paste-back band: the selection grown (negative: shrunk) by this many pixels
    feather: int | None = None  # then softened over this many pixels; None: composite.grow / .feather
    generative: bool = False  # Erase with the inpainting model (and the erase prompts) rather than the eraser
    model: str = ""  # the inpainting model, by name, among inpaint.model and inpaint.models; "" the default


@dataclass(frozen=True)
class EditResult:
    images: list[np.ndarray]  # one per variation, each the input's size
    mask: np.ndarray  # the mask the edit used (for background: the inverted subject)
    seed: int
    metadata: dict[str, str] = field(default_factory=dict)  # written into the PNG


@dataclass(frozen=True)
class TextSelection:
    """What "select by name" found: the union of every instance's mask, and how it got there."""

    mask: np.ndarray  # HxW uint8, 255 = selected
    detections: list[Detection]  # best first
    parts: tuple[SelectionPart, ...]  # one box prompt per detection (plus the refining clicks)


@dataclass(frozen=True)
class Backends:
    """What runs each operation, one line each, as it is now (see `Engine.status`)."""

    device: str
    segmenter: str
    inpainter: str
    eraser: str
    hint: str = ""  # what to run to get missing models, when some are missing
    detector: str = "none"  # "select by name"; optional, so not part of `hint`
    errors: tuple[str, ...] = ()  # one line per model that failed to load, naming the fallback in use
    upscaler: str = f"lanczos: a plain resize, no upscaling model (run `{UPSCALER_DOWNLOAD_HINT}`)"


class Engine:
    def __init__(
        self,
        segmenter: Segmenter,
        inpainter: Inpainter | None,
        backends: Backends,
        inpaint_defaults: InpaintConfig,
        composite_config: CompositeConfig,
        erase_config: EraseConfig,
        detector: Detector | None = None,
        limits: LimitsConfig = LimitsConfig(),
        *,
        prefill: Eraser,
        eraser: Eraser | None = None,
        eraser_config: EraserConfig = EraserConfig(),
        max_pixels: int = 50_000_000,
        upscaler: Upscaler | None = None,
        upscaler_config: UpscalerConfig = UpscalerConfig(),
        priority: SelectionFirst | None = None,
    ) -> None:
        """`eraser` (LaMa) erases when given; without it Erase is generative through `inpainter`.
        `prefill` (the classical OpenCV eraser, needing no weights) pre-fills the hole for generative
        erase and erases when the others are missing or failed to load. `upscaler` (Real-ESRGAN)
        upscales and sharpens new backgrounds; without it (or once it failed to load) Upscale is a
        Lanczos resize, announced as such. `priority` pauses generations at their step boundaries
        while a selection runs (default: on for a CPU `backends.device`, off for a GPU)."""
        self.segmenter = segmenter
        self.inpainter = inpainter
        self.eraser = eraser
        self.prefill = prefill
        self.eraser_config = eraser_config
        self._planned = backends  # what the settings name; `status()` adds what failed since
        self.defaults = inpaint_defaults
        self.composite = composite_config
        self.erase_config = erase_config
        self.detector = detector
        self.limits = limits
        self.max_pixels = max_pixels  # max_image_pixels: an edit that would make a larger photo is refused first
        self.upscaler = upscaler
        self.upscaler_config = upscaler_config
        self.priority = SelectionFirst.for_device(backends.device) if priority is None else priority

    @property
    def backends(self) -> Backends:
        """The same as `status()`: read at any time, it reflects the models that failed to load."""
        return self.status()

    def status(self) -> Backends:
        """What runs each operation now, and one line in `errors` per model that failed to load.

        A failed load is remembered for the life of the process (the settings cannot change in a
        running one), so the status only ever gains errors: SAM's leaves clicks to GrabCut, the
        eraser's leaves Erase to the classical fill, the inpainting model's leaves Erase (without
        an eraser) to the classical fill and Fill refused with the reason, the detector's turns
        "select by name" off. The eraser line names what erases: as planned, or the classical fill
        once the eraser (or, for generative erase, the inpainting model) failed to load.
        """
        status, errors = self._planned, []
        sam_error = getattr(self.segmenter, "load_error", None)  # stand-ins in tests load nothing
        if sam_error:
            status = replace(status, segmenter=self.segmenter.description)
            errors.append(f"{sam_error}; selecting with GrabCut")
        if self.eraser is not None:
            if self.eraser.load_error:
                status = replace(status, eraser=f"{self.prefill.description} ({self.eraser.model_name} failed to load)")
                errors.append(f"{self.eraser.load_error}; Erase uses the classical fill")
        inpaint_error = getattr(self.inpainter, "load_error", None)
        if inpaint_error:
            status = replace(status, inpainter=f"none ({self.inpainter.model_name} failed to load)")
            if self.eraser is None:
                status = replace(status, eraser=f"{self.prefill.description} (the inpainting model failed to load)")
                errors.append(f"{inpaint_error}; Erase uses the classical fill, Fill and Replace background are off")
            else:
                errors.append(f"{inpaint_error}; Fill, Replace background and generative erase are off")
        detector_error = getattr(self.detector, "load_error", None)
        if detector_error:
            status = replace(status, detector="none (the detector failed to load)")
            errors.append(f"{detector_error}; select by name is off")
        upscaler_error = getattr(self.upscaler, "load_error", None)
        if upscaler_error:
            status = replace(status, upscaler=f"lanczos: a plain resize ({self.upscaler.model_name} failed to load)")
            errors.append(f"{upscaler_error}; Upscale is a plain Lanczos resize")
        return replace(status, errors=status.errors + tuple(errors))

    def inpaint_models(self) -> tuple[str, ...]:
        """The inpainting models a person may choose per edit (`EditOptions.model`), the default first."""
        return inpainter_names(self.inpainter)

    def warm_up(self, detector: bool = False, upscaler: bool = False) -> None:
        """Load the models now (e.g. in the background while the page is served): SAM first,
        as the first click needs it, then the eraser, then the inpainting pipeline, then (if asked:
        few sessions select by name or upscale) the detector and the upscaler. Never raises for a
        model that fails to load: the failure is remembered and shown by `status()`."""
        loads = [self.segmenter.load]
        if self.eraser is not None:
            loads.append(self.eraser.load)
        if self.inpainter is not None:
            loads.append(self.inpainter.load)
        if detector and self.detector is not None:
            loads.append(self.detector.load)
        if upscaler and self.upscaler is not None:
            loads.append(self.upscaler.load)
        for load in loads:
            try:
                load()
            except ModelLoadError:
                pass  # remembered by the model, reported by status()

    # --- selection -------------------------------------------------------------------------

    def prepare(self, image: np.ndarray) -> ImageRef:
        """Compute the image's embedding now, so that the first click is fast."""
        with self.priority.selecting():
            return self.segmenter.prepare(image)

    def select(self, image: np.ndarray, prompts: Prompts) -> np.ndarray:
        """The object the prompts point at, as an `HxW uint8` mask (255 = selected)."""
        with self.priority.selecting():
            return self._segment(image, None, prompts)[1]

    def candidates(self, image: np.ndarray, prompts: Prompts) -> list[tuple[int, np.ndarray]]:
        """The different masks an ambiguous first click (`Prompts.is_ambiguous`) could mean, each with
        its candidate index: up to CANDIDATES, one for a segmenter with one answer (GrabCut), none
        for prompts that are not ambiguous. The image is embedded once; each is a decoder run."""
        if not prompts.is_ambiguous:
            return []
        found: list[tuple[int, np.ndarray]] = []
        ref = None
        with self.priority.selecting():
            for candidate in range(CANDIDATES):
                ref, mask = self._segment(image, ref, prompts.with_candidate(candidate))
                if not any(np.array_equal(mask, other) for _, other in found):
                    found.append((candidate, mask))
        return found

    def select_parts(self, image: np.ndarray, parts: list[SelectionPart]) -> np.ndarray:
        """Several objects: the union of the added ones, minus the subtracted ones."""
        selection = np.zeros(image.shape[:2], np.uint8)
        check_prompt_count(sum(part.prompts.count for part in parts), self.limits.points)
        ref = None  # the image is prepared once, at the first part that selects something
        with self.priority.selecting():
            for part in parts:
                if part.prompts.is_empty:
                    continue
                ref, mask = self._segment(image, ref, part.prompts)
                selection = masks.subtract(selection, mask) if part.subtract else masks.union(selection, mask)
        return selection

    def _segment(self, image: np.ndarray, ref: ImageRef | None, prompts: Prompts) -> tuple[ImageRef, np.ndarray]:
        """The prompts' mask on the prepared image (prepared now if `ref` is None), and its reference.

        The prompts are checked before any model work. The segmenter may release a prepared
        image to make room for others (many sessions share its cache): it is prepared again, once.
        """
        height, width = image.shape[:2]
        prompts = prompts.validated(width, height, self.limits.points)
        ref = self.segmenter.prepare(image) if ref is None else ref
        try:
            return ref, self.segmenter.segment(ref, prompts).mask
        except ImageExpired:
            ref = self.segmenter.prepare(image)
            return ref, self.segmenter.segment(ref, prompts).mask

    def detect(self, image: np.ndarray, query: str) -> list[Detection]:
        """The instances of what `query` names ("dog", "person, bicycle"), best first; never empty."""
        _check_text("the query", query, self.limits)
        if self.detector is None:
            raise ModelUnavailableError(
                f"selecting by name needs the detector, which is not on this machine: run `{DETECTOR_DOWNLOAD_HINT}` "
                "or set detector.model to a local folder"
            )
        queries = parse_query(query)
        with self.priority.selecting():
            detections = self.detector.detect(image, queries)
        if not detections:
            raise SelectionError(f"no {', '.join(queries)} found in the photo: try other words, or a lower "
                                 "detector.box_threshold")
        return detections

    def select_by_text(self, image: np.ndarray, query: str, refine: Prompts = Prompts()) -> TextSelection:
        """Every instance of what `query` names, each selected from its box, combined by union.

        `refine` adds clicks: a point inside a detected box refines that instance, other points
        and a box select one more object that joins the selection.
        """
        detections = self.detect(image, query)
        parts = refine_detected(detected_parts(detections), refine)
        mask = self.select_parts(image, list(parts))
        if not mask.any():
            boxes = f"{len(detections)} box{'es' if len(detections) > 1 else ''}"
            raise SelectionError(f"found {boxes} for {query.strip()!r} but {self.backends.segmenter} selected "
                                 "nothing inside them: add a point or a box")
        return TextSelection(mask, detections, parts)

    # --- edits -----------------------------------------------------------------------------

    def fill(self, image: np.ndarray, mask: np.ndarray, prompt: str, options: EditOptions = EditOptions(),
             progress: Progress | None = None, cancel: threading.Event | None = None) -> EditResult:
        """Paint what `prompt` describes into the selection."""
        if not prompt.strip():
            raise EditorError("Fill needs a prompt: describe what should appear in the selection")
        mask = masks.require_selection(mask, image.shape[:2])
        request = self._request(prompt, options, self.defaults.negative_prompt, self.defaults.strength)
        return self._generate("fill", image, mask, request, self._alpha(mask, options), progress, cancel)

    def erase(self, image: np.ndarray, mask: np.ndarray, options: EditOptions = EditOptions(),
              progress: Progress | None = None, cancel: threading.Event | None = None) -> EditResult:
        """Remove the selected object and reconstruct what is behind it.

        With an eraser (LaMa), each selected region is refilled on a crop of its own (see
        `strategy.erase`). Without one, or when `options.generative` is asked, the inpainting model
        repaints it: the hole is first filled classically, so that the model, run below full
        strength with a background prompt and a negative prompt against objects, continues the
        background instead of inventing a new object. Without either (or when the eraser failed
        to load), the classical fill is the result. The metadata's "model" names what erased.
        """
        mask = masks.require_selection(mask, image.shape[:2])
        request = self._request(self.erase_config.prompt, options, self.erase_config.negative_prompt,
                                self.erase_config.strength)
        alpha = self._alpha(mask, options)
        generative = options.generative
        eraser = None if generative else self._chosen_eraser()
        if eraser is None:
            try:
                return self._generate("erase", image, mask, request, alpha, progress, cancel, prefill=True)
            except ModelLoadError:  # failed to load just now: remembered, in status()
                if generative:
                    raise
                eraser = self.prefill
        try:
            return self._erase_with(eraser, image, mask, alpha, request)
        except ModelLoadError:  # the eraser failed to load just now: remembered, in status()
            return self._erase_with(self.prefill, image, mask, alpha, request)

    def replace_background(self, image: np.ndarray, subject_mask: np.ndarray, prompt: str,
                           options: EditOptions = EditOptions(), progress: Progress | None = None,
                           cancel: threading.Event | None = None) -> EditResult:
        """Keep the subject exactly and paint a new background from `prompt`."""
        if not prompt.strip():
            raise EditorError("Replace background needs a prompt: describe the new background")
        subject = masks.require_selection(subject_mask, image.shape[:2])
        background = masks.invert(subject)
        if masks.is_empty(background):
            raise EditorError("the subject covers the whole photo: there is no background to replace")
        request = self._request(prompt, options, self.defaults.negative_prompt, self.defaults.strength)
        # The subject is kept exactly: no grow, and the soft edge never reaches into it.
        alpha = composite.paste_alpha(background, 0, self._feather(options), protect=subject)
        return self._generate("background", image, background, request, alpha, progress, cancel, match_color=False)

    def upscale(self, image: np.ndarray, factor: int, progress: Progress | None = None,
                cancel: threading.Event | None = None) -> EditResult:
        """The photo enlarged `factor` (2 or 4) times, tile by tile, by the upscaling model.

        A result above max_image_pixels is refused before any work. An x4 model gives x2 by
        shrinking each tile's output (area averaging); an x2 model gives x4 in two passes. Without
        a model, or once it failed to load, a Lanczos resize: the metadata's "model" says so.
        """
        if factor not in UPSCALE_FACTORS:
            raise EditorError(f"the upscale factor must be 2 or 4, got {factor}")
        height, width = image.shape[:2]
        pixels = width * factor * height * factor
        if pixels > self.max_pixels:
            raise EditorError(f"x{factor} would make {width * factor}x{height * factor} ({pixels / 1e6:.1f} MP), over "
                              f"max_image_pixels ({self.max_pixels / 1e6:g} MP): upscale less, or raise the limit")
        upscaler = self._chosen_upscaler()
        result, model = None, LANCZOS_NAME
        if upscaler is not None:
            try:
                result, model = self._enlarge(upscaler, image, factor, progress, cancel), upscaler.model_name
            except ModelLoadError:  # failed to load just now: remembered, in status()
                pass
        if result is None:
            result = composite.resize_image(image, width * factor, height * factor)
        metadata = {"mode": "upscale", "scale": str(factor), "model": model, "software": "photo-editor"}
        return EditResult([result], np.full((height, width), 255, np.uint8), 0, metadata)

    def cutout(self, image: np.ndarray, mask: np.ndarray, options: EditOptions = EditOptions()) -> np.ndarray:
        """The selection cut out: `HxWx4 uint8` RGBA, the photo's colours with the selection grown
        and feathered (`options.grow` / `.feather`, as an edit pastes it) as the alpha."""
        mask = masks.require_selection(mask, image.shape[:2])
        alpha = self._alpha(mask, options)
        if masks.is_empty(alpha):
            raise SelectionError("the selection shrinks to nothing with this grow: grow it less")
        return composite.cutout(image, alpha)

    def outpaint(self, image: np.ndarray, extend: tuple[int, int, int, int], prompt: str,
                 options: EditOptions = EditOptions(), progress: Progress | None = None,
                 cancel: threading.Event | None = None) -> EditResult:
        """The photo on a canvas grown by `extend` = (left, top, right, bottom) pixels, the new border
        painted from `prompt` (empty: OUTPAINT_PROMPT); the original stays exact at (left, top).

        The border starts from the original's edge, replicated and blurred outward
        (`canvas.extend_canvas`). The model only sees crops of at most its native size
        (`strategy.border_pieces`), painted one after another so that each sees the original and
        the pieces before it. The seam is soft on the border side only: over its first `feather`
        pixels the painted border fades into the pre-fill, the original's own edge colours.
        Each variation is a run of its own, variation i with seed + i - 1. The result's mask is the
        border, on the new canvas.
        """
        extend = canvas.check_extend(extend)
        height, width = image.shape[:2]
        new_width, new_height = canvas.extended_size(width, height, extend)
        if new_width * new_height > self.max_pixels:
            raise EditorError(f"the extended photo would be {new_width}x{new_height} "
                              f"({new_width * new_height / 1e6:.1f} MP), above max_image_pixels "
                              f"({self.max_pixels / 1e6:g} MP): extend less")
        request = self._request(prompt.strip() or OUTPAINT_PROMPT, options, self.defaults.negative_prompt,
                                self.defaults.strength)
        inpainter = self._require_inpainter("outpaint", request.model)
        border = canvas.border_mask(width, height, extend)
        prefilled = canvas.extend_canvas(image, extend)
        feather = self._feather(options)
        blend = max(OUTPAINT_BLEND_PX, feather)
        native = inpainter.native_size
        inner = canvas.original_box(width, height, extend)
        pieces = strategy.border_pieces((new_width, new_height), inner, native, overlap=max(native // 4, 3 * blend))
        ring = max(4, self.composite.feather) if self.composite.match_color else 0
        runs, calls = len(pieces) * request.num_images, itertools.count()
        paced = self._paced(progress, cancel)
        images = []
        for index in range(request.num_images):
            chain = replace(request, seed=(request.seed + index) % 2**63, num_images=1)

            def model(work: np.ndarray, hole: np.ndarray, chain: InpaintRequest = chain) -> np.ndarray:
                done_before = next(calls)  # pieces already painted, over every variation: one progress bar
                def step(done: int, total: int) -> None:
                    paced(done_before * total + done, runs * total)

                return inpainter.inpaint(work, hole, chain, step, cancel)[0]

            painted = strategy.fill_border(prefilled, border, pieces, model, blend, multiple=8, ring_px=ring)
            images.append(strategy.soft_seam(prefilled, painted, inner, feather))
        metadata = self._metadata("outpaint", request, inpainter.model_name)
        metadata["extend"] = ",".join(str(side) for side in extend)
        return EditResult(images, border, request.seed, metadata)

    # --- internals -------------------------------------------------------------------------

    def _request(self, prompt: str, options: EditOptions, negative: str, strength: float) -> InpaintRequest:
        pick = lambda value, default: default if value is None else value  # noqa: E731
        request = InpaintRequest(
            prompt=prompt.strip(),
            negative_prompt=pick(options.negative_prompt, negative),
            steps=pick(options.steps, self.defaults.steps),
            guidance=pick(options.guidance, self.defaults.guidance),
            strength=pick(options.strength, strength),
            seed=pick(options.seed, secrets.randbelow(2**31)),
            num_images=pick(options.num_images, self.defaults.num_images),
            model=options.model,
        )
        _check_request(request, self.limits)
        return request

    def paste_band(self, mask: np.ndarray, options: EditOptions = EditOptions()) -> np.ndarray:
        """Every pixel a Fill or Erase of `mask` may change (255), and no other."""
        return masks.binary(self._alpha(mask, options) > 0)

    def _alpha(self, mask: np.ndarray, options: EditOptions) -> np.ndarray:
        grow_px = self.composite.grow if options.grow is None else options.grow
        return composite.paste_alpha(mask, grow_px, self._feather(options))

    def _feather(self, options: EditOptions) -> int:
        return self.composite.feather if options.feather is None else options.feather

    def _generate(self, mode: str, image: np.ndarray, mask: np.ndarray, request: InpaintRequest,
                  alpha: np.ndarray, progress: Progress | None, cancel: threading.Event | None,
                  prefill: bool = False, match_color: bool = True) -> EditResult:
        """Inpaint the crop around `alpha` (the paste-back weights) and paste each output through it."""
        inpainter = self._require_inpainter(mode, request.model)
        steps = self._paced(progress, cancel)
        band = masks.binary(alpha > 0)
        plan = composite.plan_crop(band, inpainter.native_size, self.composite.context, self.composite.min_context_px)
        crop, crop_band = plan.crop(image), plan.crop(band)
        if prefill:
            crop = self.prefill.erase(crop, crop_band)
        sharpen = self._background_resize(mode)
        patches = strategy.run(crop, crop_band, plan.work_width, plan.work_height,
                               lambda work, hole: inpainter.inpaint(work, hole, request, steps, cancel),
                               multiple=8,  # the VAE's factor; plan_crop's work sizes are multiples already
                               resize_back=sharpen or composite.resize_image)
        # A new background has its own colours: matching it to the subject's edge would be wrong.
        if self.composite.match_color and match_color:
            ring = max(4, self.composite.feather)
            patches = [composite.match_color(patch, plan.crop(image), crop_band, ring_px=ring) for patch in patches]
        images = [composite.paste_back(image, patch, plan, alpha) for patch in patches]
        metadata = self._metadata(mode, request, inpainter.model_name)
        if sharpen is not None and plan.work_width < plan.size[0]:
            metadata["background_upscaler"] = self.upscaler.model_name if self._chosen_upscaler() else LANCZOS_NAME
        return EditResult(images, mask, request.seed, metadata)

    def _paced(self, progress: Progress | None, cancel: threading.Event | None) -> Progress:
        """The per-step callback a generation calls: it first yields to any selection running
        (`SelectionFirst`), then reports the progress."""
        def step(done: int, total: int) -> None:
            self.priority.step_boundary(cancel)
            if progress is not None:
                progress(done, total)

        return step

    def _chosen_upscaler(self) -> Upscaler | None:
        """The upscaling model, or None (a Lanczos resize) when there is none or it failed to load."""
        if self.upscaler is None or self.upscaler.load_error:
            return None
        return self.upscaler

    def _enlarge(self, upscaler: Upscaler, image: np.ndarray, factor: int, progress: Progress | None,
                 cancel: threading.Event | None) -> np.ndarray:
        """`image` x`factor` through `upscaler`, tiled: one pass, or two for an x2 model asked for x4."""
        scale, overlap = upscaler.scale, self.upscaler_config.overlap
        passes = 1 if scale >= factor else 2
        sizes = [(image.shape[1] * scale ** n, image.shape[0] * scale ** n) for n in range(passes)]
        counts = [len(strategy.tile_boxes(width, height, upscaler.tile)) for width, height in sizes]
        done = [0]

        paced = self._paced(progress, cancel)

        def step(tiles: int, _total: int) -> None:  # a tile boundary is a step boundary
            paced(done[0] + tiles, sum(counts))

        for index in range(passes):
            image = strategy.upscale_tiled(image, upscaler.upscale, scale, upscaler.tile, overlap,
                                           factor if passes == 1 else scale, step, cancel)
            done[0] += counts[index]
        return image

    def _background_resize(self, mode: str) -> strategy.Resize | None:
        """For a new background generated smaller than its region (composite.upscale_background: auto):
        enlarge it with the upscaling model, then fit it to the region, instead of a plain resize.
        None when a plain resize it is (not a background, no model, or the setting is off)."""
        upscaler = self._chosen_upscaler()
        if mode != "background" or self.composite.upscale_background != "auto" or upscaler is None:
            return None
        overlap = self.upscaler_config.overlap

        def enlarge(patch: np.ndarray, width: int, height: int) -> np.ndarray:
            if width <= patch.shape[1] and height <= patch.shape[0]:
                return composite.resize_image(patch, width, height)
            try:
                patch = strategy.upscale_tiled(patch, upscaler.upscale, upscaler.scale, upscaler.tile, overlap)
            except ModelLoadError:  # failed to load just now: remembered, in status(); the plain resize serves
                pass
            return composite.resize_image(patch, width, height)

        return enlarge

    def _require_inpainter(self, mode: str, model: str = "") -> Inpainter:
        """The inpainting model `model` names ("" the default), or one line saying there is none."""
        if self.inpainter is None:
            raise ModelUnavailableError(
                f"{mode} needs an inpainting model and none is on this machine: run `{DOWNLOAD_HINT}` "
                "or set inpaint.model to a local diffusers folder"
            )
        return choose_inpainter(self.inpainter, model)

    def _chosen_eraser(self) -> Eraser | None:
        """What erases without asking for generative erase: the eraser, else (None) the inpainting
        model, else the classical fill. An eraser that failed to load leaves the classical fill."""
        if self.eraser is not None:
            return self.prefill if self.eraser.load_error else self.eraser
        if self.inpainter is not None and not getattr(self.inpainter, "load_error", None):
            return None
        return self.prefill

    def _erase_with(self, eraser: Eraser, image: np.ndarray, mask: np.ndarray, alpha: np.ndarray,
                    request: InpaintRequest) -> EditResult:
        """`eraser` on a crop around each selected region. The hole it fills is the selection grown by
        eraser.grow_px (a tight hole leaves ghosts of the object's edge) and all of the paste band."""
        config = self.eraser_config
        hole = masks.grow(mask, config.grow_px)

        def region(crop: np.ndarray, crop_hole: np.ndarray) -> np.ndarray:  # a region boundary is a step boundary
            self.priority.step_boundary()
            return eraser.erase(crop, crop_hole)

        result = strategy.erase(image, hole, alpha, region, eraser.multiple, eraser.max_side, config.margin_px)
        metadata = self._metadata("erase", replace(request, steps=0, prompt="", negative_prompt=""), eraser.model_name)
        return EditResult([result], mask, request.seed, metadata)

    @staticmethod
    def _metadata(mode: str, request: InpaintRequest, model: str) -> dict[str, str]:
        return {
            "mode": mode,
            "prompt": request.prompt,
            "negative_prompt": request.negative_prompt,
            "seed": str(request.seed),
            "steps": str(request.steps),
            "guidance": f"{request.guidance:g}",
            "strength": f"{request.strength:g}",
            "model": model,
            "software": "photo-editor",
        }


def _check_request(request: InpaintRequest, limits: LimitsConfig) -> None:
    ranges = limits.ranges  # the same ranges as the settings and the page's sliders
    _check_text("the prompt", request.prompt, limits)
    _check_text("the negative prompt", request.negative_prompt, limits)
    if request.steps not in ranges.steps:
        raise EditorError(f"steps must be {ranges.steps.describe()} (limits.steps), got {request.steps}")
    if request.strength not in ranges.strength:
        raise EditorError(f"strength must be {ranges.strength.describe()}, got {request.strength}")
    if request.guidance not in ranges.guidance:
        raise EditorError(f"guidance must be {ranges.guidance.describe()}, got {request.guidance}")
    if request.num_images not in ranges.variations:
        raise EditorError(f"the number of images (variations) must be {ranges.variations.describe()} "
                          f"(limits.variations), got {request.num_images}")
    if not 0 <= request.seed < 2**63:
        raise EditorError(f"seed must be a non-negative whole number, got {request.seed}")
    if int(request.steps * request.strength) < 1:
        raise EditorError("steps x strength is below one step: raise the steps or the strength")


def _check_text(what: str, text: str, limits: LimitsConfig) -> None:
    if len(text) > limits.prompt_chars:
        raise EditorError(f"{what} is {len(text)} characters long; at most {limits.prompt_chars} "
                          "(limits.prompt_chars)")

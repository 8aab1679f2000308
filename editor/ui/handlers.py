"""The page's event handlers: Gradio values in, session and engine calls, Gradio values out.

Each handler works on the browser session's own `Session` (from `gr.State`) and returns a
tuple matching one of the output lists wired in `editor.ui.page`: the status line always first.
Errors a person can act on become that status line plus a warning, never a traceback, and
leave the session as it was (see `guard`).
"""
from __future__ import annotations

import functools
import hashlib
import html
import json
import logging
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np

from editor.core import canvas as canvas_geometry, masks
from editor.core.display import display_scale
from editor.ui import views
from editor.core.config import Config
from editor.engine.ops import (
    DETECTOR_DOWNLOAD_HINT,
    DOWNLOAD_HINT,
    EditOptions,
    EditResult,
    Engine,
    upscaled_by,
)
from editor.core.errors import EditCancelled, EditorError, ImageError, SelectionError, describe
from editor.core.photo_io import EXTENSIONS, edit_metadata, load_photo, write_photo
from editor.ui.views import Marker
from editor.session.session import ClickMode, Session
from editor.session.store import SessionStore
from editor.ui.uploads import checked_upload

log = logging.getLogger(__name__)

PHOTO_OUTPUTS = 8  # what `Handlers._photo_outputs` returns
DOWNLOAD_COMPRESSION = 1  # zlib level of the download PNG: lossless all the same, several times faster than 6
COMPARE_SIDE = 1024  # before/after view
CANDIDATE_SIDE = 240  # the thumbnails of a first click's candidate masks
DETAIL_MAX_PIXELS = 6_000_000  # the largest part of a photo a zoomed canvas gets at full resolution
EDIT_NAMES = {"fill": "Fill", "erase": "Erase", "background": "Replace background", "outpaint": "Extend canvas",
              "upscale-2": "Upscale ×2", "upscale-4": "Upscale ×4"}
UPSCALES = {"upscale-2": 2, "upscale-4": 4}  # the edits that enlarge the whole photo: no selection, no prompt
# The controls each optional model serves (their elem_ids), off with a tooltip while it is missing.
NEEDS_INPAINTER = ("fill", "background", "outpaint", "generative-erase")
NEEDS_DETECTOR = ("select-by-name", "select-text", "click-mode")
CANCELLED = "Cancelled."
PROMPTED = ("fill", "background", "outpaint")  # the edits Enter in the prompt repeats (the last used)
CLICK_MODES = [("Object +", "add"), ("Not object −", "remove"), ("Box", "box"),
               ("Brush +", "paint"), ("Brush −", "unpaint"),
               ("Drop a found box", "drop")]  # the last one needs the detector
PAINT_MODES = ("paint", "unpaint")  # a drag paints the selection in or out (the canvas script's strokes)
PAINTED = ("Painted into the selection: [ and ] change the brush size.",
           "Painted out of the selection: [ and ] change the brush size.")
CONTROL_OUTPUTS = len(NEEDS_INPAINTER) + len(NEEDS_DETECTOR) + 1  # what `Handlers.controls` returns

Image = np.ndarray
Gallery = list[tuple[np.ndarray, str]]


def guard(handler: Callable[..., Any], outputs: int) -> Callable[..., Any]:
    """Turn a person's error into a warning and a status line; leave every other output as it is."""

    @functools.wraps(handler)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return handler(*args, **kwargs)
        except EditCancelled:  # what the person asked for: said plainly, not as a warning
            message = None
        except Exception as exc:  # described as the API does: a bug gets an id and one traceback in the log
            message = describe(exc, log, f"page: {getattr(handler, '__name__', 'handler')}")
        if message is None:
            return CANCELLED if outputs == 1 else (CANCELLED,) + tuple(gr.skip() for _ in range(outputs - 1))
        gr.Warning(html.escape(plain_text(message)))
        if outputs == 1:  # Gradio takes a single output's value as is, not as a 1-tuple
            return warning(message)
        return (warning(message),) + tuple(gr.skip() for _ in range(outputs - 1))

    return run


def quietly(handler: Callable[..., Any], fallback: Any) -> Callable[..., Any]:
    """For what a page shows on the side (no status line of its own): `fallback` on a person's error."""

    @functools.wraps(handler)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return handler(*args, **kwargs)
        except EditorError:
            return fallback

    return run


def warning(message: str) -> str:
    return f"⚠️ {plain_markdown(message)}"


def plain_text(text: str) -> str:
    """A message as a person reads it: the backticks that quote commands in errors and logs dropped."""
    return text.replace("`", "")


def plain_markdown(text: str) -> str:
    """Plain text for a Markdown line (messages may quote file names or prompts), without backticks."""
    return re.sub(r"([\\*_\[\]<>#|~])", r"\\\1", plain_text(text))


def missing_models(engine: Engine) -> dict[str, str]:
    """The optional models that cannot run now (missing, or failed to load: `Engine.status`), each
    with the tooltip its controls show: what they need and the command that downloads it."""
    status = engine.status()
    missing = {}
    if status.inpainter.startswith("none"):
        missing["inpainter"] = f"Needs an inpainting model: run {DOWNLOAD_HINT}"
    if engine.detector is None or status.detector.startswith("none"):
        missing["detector"] = f"Needs the detector: run {DETECTOR_DOWNLOAD_HINT}"
    return missing


def control_settings(missing: dict[str, str]) -> dict[str, dict[str, Any]]:
    """elem_id -> the settings of each control an optional model serves: off while it is missing.
    A radio cannot turn one choice off: "Drop a found box" is left out, and its line says why."""
    inpaint, detect = "inpainter" not in missing, "detector" not in missing
    settings: dict[str, dict[str, Any]] = {elem_id: {"interactive": inpaint} for elem_id in NEEDS_INPAINTER}
    if not inpaint:
        settings["generative-erase"]["value"] = False
    settings["select-by-name"] = {"interactive": detect}
    settings["select-text"] = {"interactive": detect, "placeholder": "dog, person, …" if detect
                               else "needs the detector"}
    settings["click-mode"] = {"choices": CLICK_MODES if detect else CLICK_MODES[:-1],
                              "info": None if detect else f"Drop a found box: {plain_text(missing['detector'])}"}
    if not detect:
        settings["click-mode"]["value"] = "add"
    return settings


def control_tooltips(missing: dict[str, str]) -> dict[str, str]:
    """elem_id -> tooltip for every control an optional model serves ("" for those that work)."""
    tips = {elem_id: missing.get("inpainter", "") for elem_id in NEEDS_INPAINTER}
    tips.update({elem_id: missing.get("detector", "") for elem_id in NEEDS_DETECTOR})
    return tips


class Handlers:
    """Handlers bound to the engine and the settings; all per-person data lives in `Session`.

    The page keeps only a session id (a plain string) in `gr.State` and in the tab's own storage;
    the sessions themselves live in the shared `SessionStore`, which keeps their history on disk.
    """

    def __init__(self, engine: Engine, config: Config, examples: list[Path], sessions: SessionStore) -> None:
        self.engine = engine
        self.config = config
        self.examples = examples
        self.sessions = sessions
        self._tabs: dict[str, str] = {}  # Gradio's session hash of an open tab -> its session id

    # --- sessions --------------------------------------------------------------------------

    def new_session(self) -> Session:
        session = self.sessions.create()
        session.grow_px, session.feather_px = self.config.composite.grow, self.config.composite.feather
        return session

    def session(self, session_id: str | None) -> Session:
        if not session_id:  # the page's load event has not given this tab its session yet
            raise EditorError("the page is still starting: try again in a moment")
        session = self.sessions.get(session_id)
        if session is None:
            raise EditorError("this editing session has expired: reload the page to start again")
        return session

    def bind(self, handler: Callable[..., Any]) -> Callable[..., Any]:
        """`handler(session, ...)` as the page calls it: `(session_id, ...)`."""

        @functools.wraps(handler)
        def run(session_id: str | None, *args: Any, **kwargs: Any) -> Any:
            return handler(self.session(session_id), *args, **kwargs)

        return run

    def restore(self, saved_id: str | None, request: gr.Request) -> tuple:
        """Page load: the tab's saved session (a reload or a restart loses nothing), or a new one.

        Returns (session id for the state, the same for the tab's storage, then the photo outputs).
        """
        self.sessions.expire()
        session = self.sessions.get(saved_id) if saved_id else None
        if session is None:
            session = self.new_session()
        if request is not None and request.session_hash:
            self._tabs[request.session_hash] = session.id
        if not session.has_image:  # nothing to show: leave the page as it is (photo outputs, sliders)
            return (session.id, session.id) + tuple(gr.skip() for _ in range(PHOTO_OUTPUTS + 2))
        status = f"Restored **{plain_markdown(session.name)}** with its history."
        return (session.id, session.id, *self._photo_outputs(session, status), session.grow_px, session.feather_px)

    def controls(self) -> tuple:
        """Page load: the controls of a model that is missing, or failed to load since the page was
        built, are off. CONTROL_OUTPUTS values: the updates of NEEDS_INPAINTER's and NEEDS_DETECTOR's
        controls, then their tooltips as JSON (`control_tooltips`) for the page's script."""
        missing = missing_models(self.engine)
        kinds = {"select-by-name": gr.Button, "select-text": gr.Textbox, "click-mode": gr.Radio,
                 "generative-erase": gr.Checkbox}
        settings = control_settings(missing)
        updates = tuple(kinds.get(elem_id, gr.Button)(**settings[elem_id]) for elem_id in NEEDS_INPAINTER + NEEDS_DETECTOR)
        return (*updates, json.dumps(control_tooltips(missing)))

    def tab_closed(self, request: gr.Request) -> None:
        """The tab closed or reloaded: stop its edit, so the model is free for others at once."""
        session_id = self._tabs.pop(request.session_hash, None) if request is not None else None
        session = self.sessions.get(session_id) if session_id else None
        if session is not None:
            session.request_cancel()

    # --- opening a photo -------------------------------------------------------------------

    def upload(self, session: Session, payload: dict | None) -> tuple:
        """The canvas received a file (raw payload: the file is read here, as uploaded)."""
        if not payload or not payload.get("path"):
            return self._photo_outputs(session, "Drop a photo on the canvas or pick an example.")
        path = checked_upload(payload, [example.parent for example in self.examples])  # never a path as sent
        return self._open(session, str(path), Path(payload.get("orig_name") or path.name).stem)

    def pick_example(self, session: Session, evt: gr.SelectData) -> tuple:
        if evt.index is None or not 0 <= int(evt.index) < len(self.examples):
            return self._photo_outputs(session, "Pick one of the example photos.")
        path = self.examples[int(evt.index)]
        return self._open(session, str(path), path.stem)

    def _open(self, session: Session, path: str, name: str) -> tuple:
        if session.edit_running:
            message = "an edit is running: wait for it or press Cancel before opening another photo"
            gr.Warning(message)
            return self._photo_outputs(session, warning(message))
        try:
            image, info = load_photo(path, self.config.max_image_pixels)
        except ImageError as exc:  # the canvas must drop the bad file and show what is kept
            gr.Warning(html.escape(str(exc)))
            return self._photo_outputs(session, warning(str(exc)))
        had_edits = session.has_image and len(session.versions) > 1
        session.open(image, _safe_name(name), info)
        height, width = image.shape[:2]
        kept = " The previous photo stays in the history." if had_edits else ""
        return self._photo_outputs(session, f"Opened **{plain_markdown(session.name)}** ({width}×{height}).{kept} "
                                            "Preparing the selection model…")

    def prepare(self, session: Session, shown: str | None = None) -> Any:
        """Compute the SAM embedding of an opened photo now, so that the first click is fast. After
        an upload that failed (`shown`, the status line, is a warning) the status keeps saying so."""
        if not session.has_image or (shown or "").startswith("⚠️"):
            return gr.skip()
        started = time.perf_counter()
        self.engine.prepare(session.image)
        took = time.perf_counter() - started
        return f"Ready ({took:.1f} s): click the object you want to edit."

    def prepare_quietly(self, session: Session) -> Any:
        """The same after an edit, an undo or a history pick: the status line keeps what happened."""
        if session.has_image:
            self.engine.prepare(session.image)
        return gr.skip()

    def canvas_cleared(self, session: Session) -> str:
        """The canvas's remove button: no working photo (a selection step now asks for one); its
        versions stay in the history, where a click brings one back."""
        message = "Drop another photo on the canvas or pick an example."
        if session.has_image and not session.edit_running:
            session.close()
            message += " Click a version in the history to get back to this one."
        return message

    # --- selecting -------------------------------------------------------------------------

    def click(self, session: Session, mode: ClickMode, evt: gr.SelectData) -> tuple:
        """A click on the canvas: `evt.index` is [x, y] in the displayed image's pixels."""
        if evt.index is None or mode in PAINT_MODES:  # the canvas script paints (`stroke`)
            return (gr.skip(), gr.skip())
        session.click(*_display_to_original(session, [float(evt.index[0]), float(evt.index[1])]), mode)
        return self._outputs_or_undo(session)

    def point(self, session: Session, mode: ClickMode, clicked: str | None) -> tuple:
        """A click on the zoomed canvas: `clicked` is JSON [x, y], sub-pixel, in the displayed image's pixels."""
        if mode in PAINT_MODES:
            return (gr.skip(), gr.skip())
        session.click(*_display_to_original(session, _numbers(clicked, 2, "a click is two numbers [x, y]")), mode)
        return self._outputs_or_undo(session)

    def drag_box(self, session: Session, dragged: str | None) -> tuple:
        """A box dragged on the canvas: `dragged` is JSON [x0, y0, x1, y1] in the displayed image's pixels."""
        corners = _numbers(dragged, 4, "a dragged box is four numbers [x0, y0, x1, y1]")
        session.box(*_display_to_original(session, corners[:2]), *_display_to_original(session, corners[2:]))
        return self._outputs_or_undo(session)

    def undo_click(self, session: Session) -> tuple:
        session.image  # noqa: B018 - a clear message when there is no photo
        session.undo_click()
        return self._selection_outputs(session)

    def undo_key(self, session: Session) -> tuple:
        """Ctrl+Z: the last selection step taken back, or, with none since the photo changed, the last edit."""
        if session.has_image and session.can_undo_click:
            session.undo_click()
            return self._selection_outputs(session, "Selection step undone (Ctrl+Shift+Z redoes it).") + _UNCHANGED
        return self.undo(session)

    def redo_key(self, session: Session) -> tuple:
        """Ctrl+Shift+Z (or Ctrl+Y): the selection step taken back last, or else the edit undone last."""
        if session.has_image and session.can_redo_click:
            session.redo_click()
            return self._selection_outputs(session, "Selection step redone.") + _UNCHANGED
        return self.redo(session)

    def clear(self, session: Session) -> tuple:
        session.image  # noqa: B018
        session.clear_selection()
        return self._selection_outputs(session, "Selection cleared: click an object.")

    def select_by_name(self, session: Session, query: str) -> tuple:
        """Select every instance of what the text names; each becomes a box on the canvas."""
        detections = session.select_by_name(query or "", self.engine.detect)
        found = ", ".join(f"{plain_markdown(d.label)} {d.score:.2f}" for d in detections)
        message = (f"Found {len(detections)}: {found}. All are selected: a click inside a box refines that "
                   "object, one outside adds another; *Drop a found box* removes one, ↶ Undo click all.")
        return self._outputs_or_undo(session, message)

    def new_part(self, session: Session, subtract: bool) -> tuple:
        session.image  # noqa: B018
        session.new_part(subtract)
        what = "Click the object to cut out of the selection." if subtract else "Click another object to add."
        return self._selection_outputs(session, what)

    def invert(self, session: Session) -> tuple:
        session.image  # noqa: B018
        session.invert()
        return self._selection_outputs(session)

    def refine(self, session: Session, grow_px: float, feather_px: float) -> tuple:
        """The grow and soft-edge sliders, in pixels of the photo as shown (the same look on any photo)."""
        session.grow_px, session.feather_px = int(grow_px), int(feather_px)
        if not session.has_image:
            return (gr.skip(), gr.skip())
        return self._selection_outputs(session)

    def stroke(self, session: Session, mode: str, painted: str | None) -> tuple:
        """A brush stroke on the canvas, applied at once: `painted` is JSON [radius, x0, y0, x1, y1, ...]
        in the displayed image's pixels (sub-pixel), rasterised at the photo's full resolution."""
        expected = "a stroke is a radius and points [radius, x0, y0, x1, y1, ...]"
        values = _numbers(painted, None, expected)
        if len(values) < 3 or len(values) % 2 == 0 or values[0] <= 0:
            raise EditorError(f"{expected}, got {str(painted)[:60]!r}")
        height, width = session.image.shape[:2]
        scale = display_scale(width, height)
        points = [views.to_original(values[i], values[i + 1], scale, width, height)
                  for i in range(1, len(values), 2)]
        stroke = masks.stroke((height, width), points, min(values[0] / scale, max(width, height)))
        if mode == "unpaint":
            session.paint(None, stroke)
        else:
            session.paint(stroke, None)
        return self._selection_outputs(session, PAINTED[mode == "unpaint"])

    def zoom_detail(self, session: Session, region: str | None) -> tuple:
        """The part of the photo a zoomed canvas shows (`region`: JSON [request, x0, y0, x1, y1], in the
        displayed image's pixels) at the photo's own resolution, and where it lies on the displayed image
        (JSON [request, x0, y0, x1, y1]: the script's request number, so that it knows its answer)."""
        request, x0, y0, x1, y1 = _numbers(region, 5, "a zoomed region is five numbers [request, x0, y0, x1, y1]")
        height, width = session.image.shape[:2]
        scale = display_scale(width, height)
        if scale >= 1.0:  # the canvas shows every pixel already
            return gr.skip(), gr.skip()
        left, top = _display_to_original(session, [min(x0, x1), min(y0, y1)])
        right, bottom = _display_to_original(session, [max(x0, x1), max(y0, y1)])
        box = (int(left), int(top), min(width, int(right) + 2), min(height, int(bottom) + 2))
        if (box[2] - box[0]) * (box[3] - box[1]) > DETAIL_MAX_PIXELS:
            return gr.skip(), gr.skip()  # zoomed too little for the photo's own pixels to show more
        detail = canvas_detail(session, session.selection_mask(self.engine.select), box)
        # Photo pixel x covers [x, x + 1) of the photo, [x * scale, (x + 1) * scale) of the displayed image.
        placed = [request, box[0] * scale, box[1] * scale, box[2] * scale, box[3] * scale]
        return detail, json.dumps([round(value, 3) for value in placed])

    def candidates(self, session: Session) -> Any:
        """After each selection step: the masks a first click alone could mean, as thumbnails to choose
        from (hidden when the click is not ambiguous, or the segmenter gives one answer)."""
        prompts = session.ambiguous_prompts
        found = self.engine.candidates(session.image, prompts) if prompts is not None else []
        if len(found) < 2:
            return gr.Gallery(value=None, visible=False)
        taken = prompts.candidate
        if taken is None:  # the best-scoring: whichever candidate the default selection is
            best = self.engine.select(session.image, prompts)
            taken = next((candidate for candidate, mask in found if np.array_equal(mask, best)), None)
        return gr.Gallery(value=candidate_thumbnails(session, found, taken), visible=True, format="png")

    def choose_candidate(self, session: Session, evt: gr.SelectData) -> tuple:
        """A click on one of the candidate thumbnails: its mask becomes the current object's."""
        prompts = session.ambiguous_prompts
        found = self.engine.candidates(session.image, prompts) if prompts is not None else []
        if evt.index is None or not 0 <= int(evt.index) < len(found):
            raise SelectionError("that choice is gone: the selection changed since; click the object again")
        candidate = found[int(evt.index)][0]
        if not session.choose_candidate(candidate):
            return (gr.skip(), gr.skip())
        return self._selection_outputs(session, f"Mask {candidate + 1} taken (Ctrl+Z goes back); "
                                                "further clicks refine it.")

    def _outputs_or_undo(self, session: Session, message: str | None = None) -> tuple:
        """The outputs after a selection step; a step the segmenter refuses is not kept."""
        try:
            return self._selection_outputs(session, message)
        except EditorError:
            session.undo_click()
            raise

    def _selection_outputs(self, session: Session, message: str | None = None) -> tuple:
        """(status, canvas) after a selection step."""
        canvas = self._canvas(session)
        return message or self._selection_status(session), canvas

    def _selection_status(self, session: Session) -> str:
        selection = session.selection
        if selection.pending_corner is not None:
            return "Box: now click the opposite corner."
        if selection.is_empty:
            return "Click the object you want to edit."
        mask = session.selection_mask(self.engine.select)
        if not mask.any():
            return "Nothing is selected there: click elsewhere on the object, add a box around it, or ↶ Undo click."
        share = 100.0 * float(np.count_nonzero(mask)) / mask.size
        parts = sum(1 for part in selection.parts if not part.prompts.is_empty)
        inverted = ", inverted" if selection.inverted else ""
        return f"Selected {share:.1f}% of the photo ({parts} object{'s' if parts != 1 else ''}{inverted})."

    # --- editing ---------------------------------------------------------------------------

    def begin_edit(self, session: Session) -> tuple:
        """Runs at once (outside the model queue) so that Cancel works while the edit waits; the
        history controls are off until it ends, so the result lands on the version it started from.
        `edit_ended`, chained after the edit whatever its outcome, ends what this begins: even an
        edit that never ran (refused by Gradio before it started) leaves nothing pending."""
        session.begin_edit()
        off = gr.Button(interactive=False)
        return "Waiting for the model…", off, off

    def cancel(self, session: Session) -> str:
        """The page's Cancel: it also drops this tab's queued edits from the queue at once (`cancels`);
        a running one stops within its current step (it holds the flag set here)."""
        return CANCELLED if session.request_cancel() else "Nothing is running."

    def edit(self, mode: str, session: Session, prompt: str, negative: str, steps: float, guidance: float,
             strength: float, seed: float | None, count: float, generative: bool = False, model: str | None = "",
             progress: gr.Progress = gr.Progress(), extend: canvas_geometry.Extend | None = None,
             again: bool = False) -> tuple:
        """Fill, erase, replace the background or extend the canvas (by `extend`), then make the
        chosen result the working photo. `model`: the inpainting model chosen ("" the default).

        The result is attached to the version the edit started from, whatever happened meanwhile;
        `again`: from the working version's parent (Generate again), beside the working version.
        """
        if mode in PROMPTED:
            session.last_action = mode
        alone = not session.edit_running  # called without the page's begin and end steps (tests, bench)
        if alone:
            session.begin_edit()
        try:
            # history moves are refused while the edit waits or runs
            base = session.version.parent if again else session.version.number
            image = session.image_of(base) if again else session.image
            result, took = self._run_edit(mode, session, prompt, negative, steps, guidance, strength, seed,
                                          count, generative, progress, extend, image, model or "")
        finally:
            if alone:
                session.end_edit()
        prompted = mode != "erase" and mode not in UPSCALES and prompt.strip()
        label = f"{EDIT_NAMES[mode]}: {prompt.strip()}" if prompted else EDIT_NAMES[mode]
        # The area the edit used stays selected (cached: no model work); whole-photo edits have none.
        area = None if mode == "outpaint" or mode in UPSCALES else session.selection_mask(self.engine.select)
        session.add_result(result.images, result.metadata, label.lower(), base=base, area=area)
        if mode in UPSCALES:
            return self._photo_outputs(session, _upscale_status(EDIT_NAMES[mode], result, took))
        variations = f" · {len(result.images)} variations: pick one below" if len(result.images) > 1 else ""
        status = (f"{EDIT_NAMES[mode]} done in {took:.1f} s · seed **{result.seed}** · "
                  f"{plain_markdown(result.metadata.get('model', ''))}{variations}")
        return self._photo_outputs(session, status)

    def edit_last(self, session: Session, prompt: str, negative: str, steps: float, guidance: float,
                  strength: float, seed: float | None, count: float, generative: bool, aspect: str | None,
                  left: float | None, top: float | None, right: float | None, bottom: float | None,
                  model: str | None = "", progress: gr.Progress = gr.Progress()) -> tuple:
        """Enter in the prompt: the action last used of Fill, Replace background and Extend canvas."""
        options = (prompt, negative, steps, guidance, strength, seed, count, generative)
        if session.last_action == "outpaint":
            return self.outpaint(session, *options, aspect, left, top, right, bottom, model=model, progress=progress)
        return self.edit(session.last_action, session, *options, model=model, progress=progress)

    def again(self, session: Session, prompt: str, negative: str, steps: float, guidance: float, strength: float,
              seed: float | None, count: float, generative: bool, aspect: str | None, left: float | None,
              top: float | None, right: float | None, bottom: float | None, model: str | None = "",
              progress: gr.Progress = gr.Progress()) -> tuple:
        """Generate again: the edit that made the working version, once more from the version it started
        from, on the selection (kept from that edit), with the prompt and options as they are now and a
        new random seed. The new result is a sibling of the old one in the history."""
        mode = _again_mode(session)
        extend = None
        if mode == "outpaint":
            extend = page_extend(session.image_of(session.version.parent), aspect, (left, top, right, bottom))
        return self.edit(mode, session, prompt, negative, steps, guidance, strength, -1, count, generative,
                         model=model, progress=progress, extend=extend, again=True)

    def use_seed(self, session: Session) -> tuple:
        """"Use this seed": the seed of the working version's edit (the variation shown) into the Seed box."""
        seed = session.version.metadata.get("seed") if session.has_image else None
        if seed is None or not seed.lstrip("-").isdigit():
            raise EditorError("this version was not made with a seed: make an edit (Fill, Erase, ...) first")
        variation = session.version.metadata.get("variation")
        which = f" (variation {variation.split(' ')[0]} is the {_ordinal(variation)} image it makes)" if variation else ""
        status = (f"Seed **{seed}** set: the same prompt, options and variations make this result again{which}.")
        return status, int(seed)

    def _run_edit(self, mode: str, session: Session, prompt: str, negative: str, steps: float, guidance: float,
                  strength: float, seed: float | None, count: float, generative: bool,
                  progress: gr.Progress, extend: canvas_geometry.Extend | None = None,
                  image: np.ndarray | None = None, model: str = "") -> tuple[EditResult, float]:
        image = session.image if image is None else image
        if mode in UPSCALES:
            return self._run_upscale(UPSCALES[mode], session, progress)
        mask = None if mode == "outpaint" else session.selection_mask(self.engine.select)  # needs no selection
        options = EditOptions(
            negative_prompt=None if mode == "erase" else negative,  # erase has its own, against new objects
            steps=int(steps),
            guidance=float(guidance),
            strength=None if mode == "erase" else float(strength),  # erase keeps its classical pre-fill
            seed=None if seed is None or seed < 0 else int(seed),
            num_images=int(count),
            grow=session.photo_px(session.grow_px),  # the band drawn on the canvas is the band pasted back
            feather=session.photo_px(session.feather_px),
            generative=bool(generative),
            model=model,
        )
        engine = self.engine
        if session.cancel.is_set():
            raise EditCancelled("cancelled before it started")
        progress(0, desc="Loading the model…")

        def step(done: int, total: int) -> None:
            progress(step_count(done, total, int(steps)), desc="Generating", unit="steps")

        started = time.perf_counter()
        if mode == "fill":
            result = engine.fill(image, mask, prompt, options, step, session.cancel)
        elif mode == "erase":
            result = engine.erase(image, mask, options, step, session.cancel)
        elif mode == "background":
            result = engine.replace_background(image, mask, prompt, options, step, session.cancel)
        elif mode == "outpaint":  # no extension at all is refused by the engine, in one line
            result = engine.outpaint(image, extend or (0, 0, 0, 0), prompt, options, step, session.cancel)
        else:
            raise EditorError(f"unknown edit {mode!r}")
        return result, time.perf_counter() - started

    def _run_upscale(self, factor: int, session: Session, progress: gr.Progress) -> tuple[EditResult, float]:
        """The whole photo enlarged: the selection plays no part, the progress counts tiles."""
        if session.cancel.is_set():
            raise EditCancelled("cancelled before it started")
        progress(0, desc="Loading the upscaler…")

        def tile(done: int, total: int) -> None:
            progress((done, total), desc="Upscaling", unit="tiles")

        started = time.perf_counter()
        result = self.engine.upscale(session.image, factor, tile, session.cancel)
        return result, time.perf_counter() - started

    def outpaint(self, session: Session, prompt: str, negative: str, steps: float, guidance: float,
                 strength: float, seed: float | None, count: float, generative: bool, aspect: str | None,
                 left: float | None, top: float | None, right: float | None, bottom: float | None,
                 model: str | None = "", progress: gr.Progress = gr.Progress()) -> tuple:
        """Extend the canvas: to the chosen aspect, or (aspect "none") by the pixels per side.
        An empty prompt continues the scene (`OUTPAINT_PROMPT`); `generative` is not used."""
        extend = page_extend(session.image, aspect, (left, top, right, bottom))
        return self.edit("outpaint", session, prompt, negative, steps, guidance, strength, seed, count,
                         model=model, progress=progress, extend=extend)

    def choose_variation(self, session: Session, evt: gr.SelectData) -> tuple:
        _no_edit_running(session)
        if evt.index is None:
            return self._photo_outputs(session, gr.skip())
        session.choose_variation(int(evt.index))
        return self._photo_outputs(session, f"Variation {int(evt.index) + 1} continues.")

    # --- history ---------------------------------------------------------------------------

    def undo(self, session: Session) -> tuple:
        _no_edit_running(session)
        session.undo()
        return self._photo_outputs(session, f"Back to {_version_name(session)}.")

    def redo(self, session: Session) -> tuple:
        _no_edit_running(session)
        session.redo()
        return self._photo_outputs(session, f"Forward to {_version_name(session)}.")

    def goto(self, session: Session, evt: gr.SelectData) -> tuple:
        _no_edit_running(session)
        if evt.index is None or not 0 <= int(evt.index) < len(session.versions):
            return self._photo_outputs(session, gr.skip())
        session.goto(session.versions[int(evt.index)].number)
        return self._photo_outputs(session, f"{_version_name(session).capitalize()}. An edit from here starts "
                                            "a branch; the later versions stay in the history.")

    def edit_ended(self, session: Session) -> tuple:
        """After an edit, whatever its outcome: it no longer counts as pending (Cancel's flag is
        cleared once none is), and Undo and Redo come back as the working version allows."""
        session.end_edit()
        return gr.Button(interactive=session.can_undo), gr.Button(interactive=session.can_redo)

    # --- views -----------------------------------------------------------------------------

    def _photo_outputs(self, session: Session, status: Any) -> tuple:
        """The PHOTO_OUTPUTS values after the photo changed: (status, canvas, history, before/after,
        download, variations, undo, redo)."""
        if not session.has_image:
            return (status, None, [], None, gr.DownloadButton(value=None, interactive=False),
                    gr.Gallery(value=[], visible=False), gr.Button(interactive=False), gr.Button(interactive=False))
        return (
            status,
            self._canvas(session),
            gr.Gallery(value=history_thumbnails(session), selected_index=_position(session)),
            compare_view(session),
            gr.DownloadButton(value=None, interactive=False),  # made by `download` once the page shows this
            self._variations_view(session),
            gr.Button(interactive=session.can_undo),
            gr.Button(interactive=session.can_redo),
        )

    def _canvas(self, session: Session) -> Image:
        return canvas_view(session, session.selection_mask(self.engine.select))

    def _variations_view(self, session: Session) -> Any:
        variations = session.variations
        if variations is None or session.version.number != variations.number:
            return gr.Gallery(value=[], visible=False)
        shown = session.photo_info.to_srgb
        thumbs = [(shown(thumbnail), f"{i + 1}") for i, thumbnail in enumerate(variations.thumbnails)]
        return gr.Gallery(value=thumbs, visible=True, selected_index=variations.chosen)

    def download(self, session: Session) -> Any:
        """The working photo at full resolution (none for the original), as `export` says: PNG, JPEG
        or TIFF with the photo's ICC profile (or converted to sRGB), EXIF, XMP and DPI, and the
        settings of every edit from the original to this version.

        Chained after every change of the photo, outside the model's queue: encoding a 24 MP PNG
        takes seconds, which nobody should wait for in the queue.
        """
        if not session.has_image or session.version.parent is None:
            return gr.DownloadButton(value=None, interactive=False)
        version, export = session.version, self.config.export
        folder = self.sessions.folder(session.id) / "downloads"
        path = folder / f"{session.name}-edit-{version.number}.{EXTENSIONS[export.format]}"
        if not path.is_file():
            folder.mkdir(parents=True, exist_ok=True)
            for older in (f for ext in EXTENSIONS.values() for f in folder.glob(f"*.{ext}")):
                older.unlink(missing_ok=True)  # Gradio serves its own copy: one file per session is enough
            partial = path.with_suffix(".part")
            write_photo(partial, session.image, session.photo_info, edit_metadata(edit_steps(session)),
                        export.format, export.colour, export.jpeg_quality, DOWNLOAD_COMPRESSION)
            partial.replace(path)
        return gr.DownloadButton(value=str(path), interactive=True)

    def cutout(self, session: Session) -> Any:
        """The selection cut out of the working photo: an RGBA PNG at its full size, the alpha the
        selection with its grow and soft edge (what the canvas draws). Off without a selection.

        Chained after every change of the canvas, outside the model's queue; the selection's masks
        are the ones the canvas was just drawn with (cached by the session).
        """
        off = gr.DownloadButton(value=None, interactive=False)
        if not session.has_image or session.selection.is_empty:
            return off
        options = EditOptions(grow=session.photo_px(session.grow_px), feather=session.photo_px(session.feather_px))
        try:
            rgba = self.engine.cutout(session.image, session.selection_mask(self.engine.select), options)
        except SelectionError:  # nothing selected (yet): the button says so by being off
            return off
        digest = hashlib.blake2b(rgba[..., 3].tobytes(), digest_size=6).hexdigest()  # the same cut-out: no new PNG
        folder = self.sessions.folder(session.id) / "cutouts"
        path = folder / f"{session.name}-cutout-{session.version.number}-{digest}.png"
        if not path.is_file():
            folder.mkdir(parents=True, exist_ok=True)
            for older in folder.glob("*.png"):  # Gradio serves its own copy: one file per session is enough
                older.unlink(missing_ok=True)
            partial = path.with_suffix(".part")
            # PNG whatever export.format says (JPEG has no transparency), in the photo's colour profile
            write_photo(partial, rgba, session.photo_info, {"mode": "cutout", "software": "photo-editor"}, "png",
                        self.config.export.colour, compress_level=DOWNLOAD_COMPRESSION)
            partial.replace(path)
        return gr.DownloadButton(value=str(path), interactive=True)


_UNCHANGED = tuple(gr.skip() for _ in range(PHOTO_OUTPUTS - 2))  # the photo outputs a selection step leaves


def _numbers(text: str | None, count: int | None, expected: str) -> list[float]:
    """`count` (None: any number of) finite numbers from the page's script, as a JSON list."""
    try:
        values = json.loads(text or "")
    except ValueError:
        values = None
    if not isinstance(values, list) or (count is not None and len(values) != count) or not all(
            isinstance(value, (int, float)) and np.isfinite(value) for value in values):
        raise EditorError(f"{expected}, got {str(text)[:60]!r}")
    return [float(value) for value in values]


def _display_to_original(session: Session, point: list[float]) -> tuple[float, float]:
    height, width = session.image.shape[:2]
    return views.to_original(point[0], point[1], display_scale(width, height), width, height)


def _again_mode(session: Session) -> str:
    """The edit Generate again repeats: the one that made the working version."""
    version = session.version
    mode = version.metadata.get("mode")
    if version.parent is None or mode not in EDIT_NAMES:
        if mode == "upscale":
            raise EditorError("an upscale gives the same result every time: there is nothing to generate again")
        raise EditorError("nothing to generate again: make an edit first (Fill, Erase, Replace background, ...)")
    return mode


def _ordinal(variation: str) -> str:
    number = int(variation.split(" ")[0])
    return f"{number}{'th' if 10 <= number % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(number % 10, 'th')}"


def step_count(done: int, total: int, steps: int) -> tuple[int, int]:
    """The progress as (1..N, N) in the steps the person asked for. The model reports its own count:
    diffusers runs int(steps × strength) of them (99 for 100 steps at strength 0.99), times the pieces
    of an outpaint, which showed as "x/99"."""
    runs = max(1, round(total / max(1, steps)))  # the pieces (an outpaint's border) that run in turn
    shown = steps * runs
    return min(shown, max(1, round(done * shown / max(1, total)))), shown


def _upscale_status(name: str, result: EditResult, took: float) -> str:
    """The status after an upscale: the new size, and what enlarged it (a plain resize said as such)."""
    height, width = result.images[0].shape[:2]
    how = plain_markdown(upscaled_by(result.metadata.get("model", "")))
    return f"{name} done in {took:.1f} s · {width}×{height} · {how}"


def canvas_view(session: Session, mask: np.ndarray | None) -> Image:
    """The display copy of the working photo with the selection (`mask`, before grow), its grow
    and soft edge, the points and the boxes drawn. Grow and soft edge are worked out on the
    display copy: the same picture as `Session.preview_mask`, without full-resolution work."""
    image = session.image
    height, width = image.shape[:2]
    scale = display_scale(width, height)
    shown_mask = None
    if mask is not None:
        small = masks.binary(views.downscale(mask, scale))
        grow, feather = (round(session.photo_px(px) * scale) for px in (session.grow_px, session.feather_px))
        shown_mask = masks.refine(small, grow, feather)
    shown = session.photo_info.to_srgb(views.downscale(image, scale))  # the browser shows sRGB
    return views.draw(shown, shown_mask, *_prompt_marks(session, lambda point: views.to_display(point, scale)))


def canvas_detail(session: Session, mask: np.ndarray | None, box: tuple[int, int, int, int]) -> Image:
    """What `canvas_view` draws, for the part `box` (x0, y0, x1, y1 in photo pixels) of the photo at its
    own resolution: what a zoomed canvas shows, sharper than the display copy enlarged."""
    x0, y0, x1, y1 = box
    grow, feather = session.photo_px(session.grow_px), session.photo_px(session.feather_px)
    pad = abs(grow) + feather + 2  # the band and the outline see the selection beyond the edges
    height, width = session.image.shape[:2]
    outer = (max(0, x0 - pad), max(0, y0 - pad), min(width, x1 + pad), min(height, y1 + pad))
    window = np.s_[outer[1]:outer[3], outer[0]:outer[2]]
    shown_mask = None if mask is None else masks.refine(masks.binary(mask[window]), grow, feather)
    shown = session.photo_info.to_srgb(np.ascontiguousarray(session.image[window]))
    drawn = views.draw(shown, shown_mask, *_prompt_marks(session, lambda p: (p[0] - outer[0], p[1] - outer[1])))
    return drawn[y0 - outer[1]:y1 - outer[1], x0 - outer[0]:x1 - outer[0]]


def _prompt_marks(session: Session, to_view: Callable[[tuple[float, float]], tuple[float, float]]) -> tuple:
    """The selection's point markers, boxes, pending corner and box names, in the coordinates `to_view` gives."""
    selection = session.selection
    markers, boxes, names = [], [], []
    for part in selection.parts:
        for (x, y), label in zip(part.prompts.points, part.prompts.labels):
            kind = "remove" if not label else ("cut" if part.subtract else "add")
            markers.append(Marker(*to_view((x, y)), kind))
        if part.prompts.box is not None:
            boxes.append((*to_view(part.prompts.box[:2]), *to_view(part.prompts.box[2:])))
            names.append(part.label)
    pending = None if selection.pending_corner is None else to_view(selection.pending_corner)
    return markers, boxes, pending, names


def candidate_thumbnails(session: Session, found: list[tuple[int, np.ndarray]], taken: int | None) -> Gallery:
    """Each candidate mask drawn on a small copy of the photo, captioned with its number and size;
    the one the selection uses now is marked."""
    image = session.image
    scale = display_scale(image.shape[1], image.shape[0], max_side=CANDIDATE_SIDE)
    small = session.photo_info.to_srgb(views.downscale(image, scale))
    thumbnails = []
    for candidate, mask in found:
        share = 100.0 * float(np.count_nonzero(mask)) / mask.size
        mark = " ✓" if candidate == taken else ""
        thumbnails.append((views.draw(small, views.downscale(mask, scale)), f"{candidate + 1} · {share:.0f}%{mark}"))
    return thumbnails


def history_thumbnails(session: Session) -> Gallery:
    """Every version of the session, each with its number and what made it; an edit made from an
    earlier version names the version it branched from. Shown in sRGB, each in its photo's profile."""
    versions = session.versions
    return [(session.info_of(v.number).to_srgb(v.thumbnail), _caption(v, versions[i - 1] if i else None))
            for i, v in enumerate(versions)]


def edit_steps(session: Session) -> list[dict[str, str]]:
    """The settings of every edit from the original to the working version, for the download."""
    return [{"version": str(v.number), "edit": v.label, **v.metadata} for v in session.lineage()[1:]]


def _caption(version: Any, before: Any) -> str:
    if version.parent is not None and (before is None or before.number != version.parent):
        return f"{version.number} · {version.label} (from {version.parent})"
    return f"{version.number} · {version.label}"


def _position(session: Session) -> int:
    number = session.version.number
    return next(i for i, version in enumerate(session.versions) if version.number == number)


def _version_name(session: Session) -> str:
    return f"version {session.version.number}: {plain_markdown(session.version.label)}"


def _no_edit_running(session: Session) -> None:
    if session.edit_running:
        raise EditorError("an edit is running: wait for it to finish, or press Cancel, before moving in the history")


def compare_view(session: Session) -> tuple[Image, Image] | None:
    """(before, after) for the slider: the working version's parent against it."""
    previous = session.previous
    if previous is None:
        return None
    scale = display_scale(*session.image.shape[1::-1], max_side=COMPARE_SIDE)
    before = session.image_of(previous.number)
    if before.shape != session.image.shape:
        return None
    shown = session.photo_info.to_srgb
    return shown(views.downscale(before, scale)), shown(views.downscale(session.image, scale))


def page_extend(image: np.ndarray, aspect: str | None, sides: tuple[float | None, ...]) -> canvas_geometry.Extend:
    """The paddings the Extend canvas controls ask for: the aspect's when one is picked, else the
    pixels per side (an emptied box counts as 0)."""
    if aspect and aspect != "none":
        return canvas_geometry.extend_for_aspect(image.shape[1], image.shape[0], aspect)
    if any(side is not None and side != int(side) for side in sides):
        raise EditorError(f"the pixels per side must be whole numbers, got {sides}")
    return canvas_geometry.check_extend(tuple(int(side or 0) for side in sides))


def _safe_name(name: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-")[:40]
    return cleaned or "photo"

"""The Gradio page: layout and wiring. Handlers live in `editor.ui.handlers`, API endpoints in `editor.ui.api`.

Model calls wait in two queues (`queues`): selection (a click's mask, the embedding, select by
name, the API's segment and select_by_text) one at a time, as the segmenter has one lock; and
generation (the edits and the API's) with `config.server.concurrency` slots. A click never
waits for another tab's generation (on a CPU the generation even pauses at its next step while
a click runs: `editor.engine.priority`); the others (history, cancel) run at once. No event
replaces the photo with its progress: it goes to the status line (`progress_on_status`), whose
tracker the page's CSS floats over the top of the photo, letting clicks through.
"""
from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any, Protocol

import gradio as gr

from editor.core.canvas import ASPECTS
from editor.core.config import Config
from editor.engine.ops import Engine
from editor.ui.api import Api
from editor.session.store import SessionStore
from editor.ui.handlers import (
    CLICK_MODES,
    NEEDS_DETECTOR,
    NEEDS_INPAINTER,
    Handlers,
    control_settings,
    guard,
    missing_models,
    plain_markdown,
    quietly,
)

SIDES = ("left", "top", "right", "bottom")  # the order of an extension's paddings
ASSETS = Path(__file__).resolve().parents[2] / "assets"
EXAMPLE_NAMES = ("chelsea.png", "coffee.png", "astronaut.png", "rocket.jpg")
CANVAS_HEIGHT = "var(--canvas-height)"  # the height the window leaves (CSS)
TAB_KEY = "photo-editor-session"
# The session id lives in the tab's sessionStorage: it survives a reload (and a restart of the app),
# and, unlike localStorage (gr.BrowserState), a second tab of the same browser gets a session of its own.
READ_TAB_ID = f"(saved) => [sessionStorage.getItem('{TAB_KEY}') || '']"
SAVE_TAB_ID = f"(id) => {{ if (id) sessionStorage.setItem('{TAB_KEY}', id); return []; }}"
# Gradio 6 buttons take no tooltip: the page sets the `title` of the controls a missing model turns
# off, from the JSON `Handlers.controls` returns (elem_id -> text, "" to remove it).
# Controls inside a closed accordion are not in the page yet: an observer sets theirs when they appear.
SET_TOOLTIPS = """(tips) => {
  window.photoEditorTips = JSON.parse(tips || "{}");
  const apply = () => {
    for (const [id, text] of Object.entries(window.photoEditorTips)) {
      const element = document.getElementById(id);
      if (!element) continue;
      for (const each of [element, ...element.querySelectorAll("button, input, textarea, label")]) {
        if (!text) each.removeAttribute("title");
        else if (each.getAttribute("title") !== text) each.setAttribute("title", text);
      }
    }
  };
  apply();
  if (!window.photoEditorTipsObserver) {
    window.photoEditorTipsObserver = new MutationObserver(apply);
    window.photoEditorTipsObserver.observe(document.body, {childList: true, subtree: true});
  }
  return [];
}"""
# Enter in the number box of Grow or Soft edge applies it: Gradio sliders apply on release, which
# their number box fires when it loses focus (sliders have no submit event).
ENTER_APPLIES = """() => {
  document.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && event.target.matches("#grow input[type=number], #feather input[type=number]")) {
      event.target.blur();
    }
  });
  return [];
}"""
# The canvas's script, attached once per page. Keys do nothing while typing in a box.
# - Ctrl+Z / Ctrl+Shift+Z (Ctrl+Y) undo and redo, Esc clears the selection, 0 shows the whole photo.
# - The wheel (a trackpad's pinch arrives as a wheel event too) zooms around the pointer, up to 16x;
#   a drag with the middle button, or with Space held, pans.
# - A drag further than a few pixels draws a box; a click stays a point. While zoomed, a click goes to
#   the server with sub-pixel coordinates (Gradio's own click mapping rounds, and assumes no zoom).
# - In the Brush + / Brush − modes a drag paints: a circle shows the brush ([ and ] change its size),
#   the stroke shows semi-transparent as it is painted, and as it ends goes to the server (its points
#   and radius), which draws it at the photo's full resolution into the selection.
# - Zoomed past the displayed image's own pixels, the part in view is fetched at the photo's full
#   resolution once the zoom and pan rest, and laid over the enlarged display copy.
# Coordinates go to the server in the displayed image's pixel grid (as Gradio's own clicks do),
# through hidden text boxes and buttons.
CANVAS_SCRIPT = """() => {
  if (window.photoEditorCanvas) return [];
  window.photoEditorCanvas = true;
  const press = (id) => { const button = document.getElementById(id); if (button) button.click(); };
  const send = (id, values) => {
    const box = document.querySelector(`#${id} textarea, #${id} input`);
    box.value = JSON.stringify(values.map((v) => Math.round(v * 100) / 100));
    box.dispatchEvent(new Event("input", {bubbles: true}));
    setTimeout(() => press(`${id}-go`), 0);
  };
  const typing = (target) => target.closest && target.closest(
    "input:not([type=radio]):not([type=checkbox]), textarea, select, [contenteditable='true']");
  const canvasImage = (target) => (target && target.tagName === "IMG" && target.closest("#canvas")) ? target : null;
  const view = {scale: 1, x: 0, y: 0, size: ""};  // the zoom, and the pan in CSS pixels
  const badge = document.createElement("div");
  badge.id = "zoom-badge";
  const sharp = document.createElement("img");  // the part in view at full resolution, over the zoomed copy
  sharp.id = "zoom-sharp";
  sharp.style.cssText = "position:absolute;pointer-events:none;display:none;z-index:4;max-width:none;max-height:none";
  const detail = {timer: null, asked: null, requests: 0};
  const viewKey = (img) => `${img.src}|${view.scale}|${view.x}|${view.y}`;
  const askDetail = (img) => {  // the displayed image's region in view, in its pixels' edge coordinates
    const frame = img.parentElement.getBoundingClientRect(), rect = img.getBoundingClientRect();
    const scale = shownScale(img);
    if (scale <= 1.01) return;
    const left = rect.left + (rect.width - img.naturalWidth * scale) / 2;
    const top = rect.top + (rect.height - img.naturalHeight * scale) / 2;
    const clampX = (v) => Math.min(Math.max(v, 0), img.naturalWidth), clampY = (v) => Math.min(Math.max(v, 0), img.naturalHeight);
    detail.asked = viewKey(img);
    const request = ++detail.requests;
    const wait = (tries) => {  // the hidden image is never loaded (lazy): its address goes to the overlay
      if (detail.asked !== viewKey(img)) return;
      const answered = placedBox();
      const fetched = (document.querySelector("#zoom-detail img") || {}).src;
      if (answered && answered[0] === request && fetched) {
        if (sharp.src === fetched && sharp.complete) placeDetail();
        else { sharp.onload = placeDetail; sharp.src = fetched; }
      } else if (tries > 0) setTimeout(() => wait(tries - 1), 100);
    };
    setTimeout(() => wait(300), 100);
    send("zoom-region", [request, clampX((frame.left - left) / scale), clampY((frame.top - top) / scale),
                         clampX((frame.right - left) / scale), clampY((frame.bottom - top) / scale)]);
  };
  const placedBox = () => {  // [request, x0, y0, x1, y1]: the answer to a request, where its part lies
    const box = document.querySelector("#zoom-placed textarea, #zoom-placed input");
    return box && box.value ? JSON.parse(box.value) : null;
  };
  const placeDetail = () => {  // the fetched part, where it lies on the displayed image now
    const img = document.querySelector("#canvas img"), placed = placedBox();
    if (!img || !placed || detail.asked !== viewKey(img)) return;
    const [, x0, y0, x1, y1] = placed, scale = shownScale(img);
    const frame = img.parentElement, frameRect = frame.getBoundingClientRect(), rect = img.getBoundingClientRect();
    const left = rect.left + (rect.width - img.naturalWidth * scale) / 2 - frameRect.left;
    const top = rect.top + (rect.height - img.naturalHeight * scale) / 2 - frameRect.top;
    if (getComputedStyle(frame).position === "static") frame.style.position = "relative";
    if (sharp.parentElement !== frame) frame.appendChild(sharp);
    Object.assign(sharp.style, {display: "block", left: left + x0 * scale + "px", top: top + y0 * scale + "px",
      width: (x1 - x0) * scale + "px", height: (y1 - y0) * scale + "px"});
  };
  const show = (img) => {
    if (!img) return;
    sharp.style.display = "none";
    clearTimeout(detail.timer);
    detail.asked = null;
    if (view.scale > 1) detail.timer = setTimeout(() => askDetail(img), 250);
    const size = `${img.naturalWidth}x${img.naturalHeight}`;
    if (img.naturalWidth && size !== view.size) Object.assign(view, {scale: 1, x: 0, y: 0, size});  // another photo
    img.style.transformOrigin = "0 0";
    img.style.transform = view.scale === 1 ? "" : `translate(${view.x}px, ${view.y}px) scale(${view.scale})`;
    if (img.parentElement) img.parentElement.style.overflow = "hidden";
    const canvas = document.getElementById("canvas");
    if (canvas && badge.parentElement !== canvas) canvas.appendChild(badge);
    badge.textContent = `${Math.round(view.scale * 100)}% · 0 shows all`;
    badge.style.display = view.scale === 1 ? "none" : "block";
  };
  const zoomTo = (img, scale, clientX, clientY) => {  // keeps the photo's point under (clientX, clientY) there
    const rect = img.getBoundingClientRect();
    const originX = rect.left - view.x, originY = rect.top - view.y;
    const u = (clientX - rect.left) / view.scale, v = (clientY - rect.top) / view.scale;
    view.scale = Math.min(16, Math.max(1, scale));
    panTo(img, clientX - originX - view.scale * u, clientY - originY - view.scale * v);
  };
  const panTo = (img, x, y) => {  // the photo always covers its frame
    const width = img.offsetWidth, height = img.offsetHeight;
    view.x = Math.min(0, Math.max(width - width * view.scale, x));
    view.y = Math.min(0, Math.max(height - height * view.scale, y));
    show(img);
  };
  const shownScale = (img) => {  // screen pixels per image pixel: the photo is shown whole (object-fit:
    const rect = img.getBoundingClientRect();  // contain), never enlarged but by the zoom
    return Math.min(rect.width / img.naturalWidth, rect.height / img.naturalHeight, view.scale);
  };
  const pixel = (img, event) => {
    const rect = img.getBoundingClientRect(), scale = shownScale(img);
    const left = rect.left + (rect.width - img.naturalWidth * scale) / 2;
    const top = rect.top + (rect.height - img.naturalHeight * scale) / 2;
    const clamp = (v, size) => Math.min(Math.max(v, 0), size - 1);
    return [clamp((event.clientX - left) / scale - 0.5, img.naturalWidth),
            clamp((event.clientY - top) / scale - 0.5, img.naturalHeight)];
  };
  const brush = {size: 24, strokes: [], painting: null, pointer: null};  // size: the diameter in screen pixels
  const paintMode = () => {
    const checked = document.querySelector("#click-mode input:checked");
    return checked && ["paint", "unpaint"].includes(checked.value) ? checked.value : null;
  };
  const ring = document.createElement("div");
  ring.id = "brush-cursor";
  ring.style.cssText = "position:fixed;box-sizing:border-box;border:1.5px solid #fff;box-shadow:0 0 0 1px rgba(0,0,0,0.7);border-radius:50%;pointer-events:none;display:none;z-index:1001";
  const layer = document.createElement("canvas");
  layer.id = "brush-stroke";
  layer.style.cssText = "position:fixed;pointer-events:none;display:none;z-index:1000";
  document.body.append(ring, layer);
  const showRing = (event) => {
    const img = event && canvasImage(event.target), on = !!(img && paintMode() && !space);
    ring.style.display = on ? "block" : "none";
    if (img) img.style.cursor = on ? "none" : "";
    if (!on) return;
    Object.assign(ring.style, {left: event.clientX - brush.size / 2 + "px", top: event.clientY - brush.size / 2 + "px",
      width: brush.size + "px", height: brush.size + "px"});
  };
  const drawStrokes = () => {  // the strokes not yet on the canvas's image, each evenly semi-transparent
    const all = brush.painting ? [...brush.strokes, brush.painting] : brush.strokes;
    const img = document.querySelector("#canvas img");
    layer.style.display = all.length && img ? "block" : "none";
    if (!all.length || !img) return;
    const frame = img.parentElement.getBoundingClientRect();
    Object.assign(layer.style, {left: frame.left + "px", top: frame.top + "px", width: frame.width + "px",
      height: frame.height + "px"});
    layer.width = frame.width; layer.height = frame.height;
    const context = layer.getContext("2d");
    for (const stroke of all) {
      const color = stroke.mode === "paint" ? "rgba(34, 197, 94, 0.5)" : "rgba(239, 68, 68, 0.5)";
      Object.assign(context, {strokeStyle: color, fillStyle: color, lineWidth: stroke.size, lineCap: "round",
        lineJoin: "round"});
      const [x0, y0] = stroke.client[0];
      context.beginPath();
      if (stroke.client.length === 1) {
        context.arc(x0 - frame.left, y0 - frame.top, stroke.size / 2, 0, 2 * Math.PI);
        context.fill();
        continue;
      }
      context.moveTo(x0 - frame.left, y0 - frame.top);
      for (const [x, y] of stroke.client.slice(1)) context.lineTo(x - frame.left, y - frame.top);
      context.stroke();
    }
  };
  document.addEventListener("load", (event) => {
    if (!canvasImage(event.target)) return;
    show(event.target);
    brush.strokes = [];  // the canvas now shows them (or the error that refused them)
    drawStrokes();
  }, true);
  let hovering = false, space = false;
  document.addEventListener("mouseover", (event) => { hovering = !!canvasImage(event.target); }, true);
  document.addEventListener("keydown", (event) => {
    if (typing(event.target)) return;
    const key = event.key.toLowerCase(), ctrl = event.ctrlKey || event.metaKey;
    if (ctrl && key === "z") { event.preventDefault(); press(event.shiftKey ? "key-redo" : "key-undo"); }
    else if (ctrl && key === "y") { event.preventDefault(); press("key-redo"); }
    else if (key === "escape") { press("clear"); }
    else if (key === "0" && !ctrl) { view.scale = 1; panTo(document.querySelector("#canvas img"), 0, 0); }
    else if (key === " " && hovering) { event.preventDefault(); space = true; showRing(brush.pointer); }
    else if (key === "[" || key === "]") {
      brush.size = Math.min(400, Math.max(2, key === "]" ? brush.size * 1.25 : brush.size / 1.25));
      showRing(brush.pointer);
    }
  });
  document.addEventListener("keyup", (event) => { if (event.key === " ") { space = false; showRing(brush.pointer); } });
  document.addEventListener("wheel", (event) => {
    const img = canvasImage(event.target);
    if (!img) return;
    event.preventDefault();
    zoomTo(img, view.scale * Math.exp(-event.deltaY * 0.002), event.clientX, event.clientY);
  }, {capture: true, passive: false});
  let drag = null, pan = null, dragEnd = null;  // the click a drag or pan ends with is neither a point nor a box
  const swallow = (event) => { dragEnd = {x: event.clientX, y: event.clientY, time: Date.now()}; };
  const endsDrag = (event) => dragEnd && dragEnd.x === event.clientX && dragEnd.y === event.clientY &&
    Date.now() - dragEnd.time < 500;
  const band = document.createElement("div");
  band.id = "drag-band";
  band.style.cssText = "position:fixed;border:2px dashed #2563eb;background:rgba(37,99,235,0.12);pointer-events:none;display:none;z-index:1000";
  document.body.appendChild(band);
  document.addEventListener("dragstart", (event) => { if (canvasImage(event.target)) event.preventDefault(); }, true);
  document.addEventListener("mousedown", (event) => {
    const img = canvasImage(event.target);
    if (!img) return;
    if (event.button === 1 || (event.button === 0 && space)) {
      event.preventDefault();
      pan = {img, x: event.clientX, y: event.clientY, from: [view.x, view.y]};
    } else if (event.button === 0 && paintMode()) {
      event.preventDefault();
      brush.painting = {img, mode: paintMode(), size: brush.size, client: [[event.clientX, event.clientY]],
        points: pixel(img, event), radius: brush.size / 2 / shownScale(img)};
      drawStrokes();
    } else if (event.button === 0) {
      event.preventDefault();
      drag = {img, x: event.clientX, y: event.clientY, moved: false, from: pixel(img, event)};
    }
  }, true);
  document.addEventListener("mousemove", (event) => {
    brush.pointer = event;
    showRing(event);
    const stroke = brush.painting;
    if (stroke) {
      const [x, y] = stroke.client[stroke.client.length - 1];
      if (Math.hypot(event.clientX - x, event.clientY - y) < 2) return;
      stroke.client.push([event.clientX, event.clientY]);
      stroke.points.push(...pixel(stroke.img, event));
      drawStrokes();
      return;
    }
    if (pan) { panTo(pan.img, pan.from[0] + event.clientX - pan.x, pan.from[1] + event.clientY - pan.y); return; }
    if (!drag) return;
    if (Math.abs(event.clientX - drag.x) + Math.abs(event.clientY - drag.y) > 6) drag.moved = true;
    if (!drag.moved) return;
    Object.assign(band.style, {display: "block", left: Math.min(drag.x, event.clientX) + "px",
      top: Math.min(drag.y, event.clientY) + "px", width: Math.abs(event.clientX - drag.x) + "px",
      height: Math.abs(event.clientY - drag.y) + "px"});
  }, true);
  document.addEventListener("mouseup", (event) => {
    if (brush.painting) {
      const stroke = brush.painting;
      brush.painting = null;
      brush.strokes.push(stroke);
      swallow(event);
      send("stroke", [stroke.radius, ...stroke.points]);
      return;
    }
    if (pan) { pan = null; swallow(event); return; }
    if (!drag) return;
    const done = drag; drag = null; band.style.display = "none";
    if (!done.moved) return;
    swallow(event);
    send("drag-box", [...done.from, ...pixel(done.img, event)]);
  }, true);
  document.addEventListener("click", (event) => {
    const img = canvasImage(event.target);
    if (!img) return;
    if (endsDrag(event)) { event.stopPropagation(); event.preventDefault(); dragEnd = null; return; }
    if (view.scale > 1) { event.stopPropagation(); event.preventDefault(); send("point", pixel(img, event)); }
  }, true);
  return [];
}"""
CONTROL_KEYS = {"fill": "fill", "background": "background", "outpaint": "outpaint", "generative-erase": "generative",
                "select-by-name": "find", "select-text": "query", "click-mode": "mode"}  # elem_id -> controls key

# The page fits the window: a header line, then three columns (the canvas, steps 1 and 2, the
# history) as tall as the window; the canvas takes the height the window has left (--canvas-height).
CSS = """
:root { --canvas-height: max(200px, calc(100vh - 262px)); }
.gradio-container { max-width: min(100%, 2400px) !important; margin: 0 auto !important;
  padding: 0 12px !important; }
.gradio-container > .main, .gradio-container .contain { padding-top: 0 !important; }
#header { align-items: center; gap: 12px; flex-wrap: nowrap; min-height: 0 !important; }
#title { flex: 0 0 auto !important; min-width: 0 !important; width: auto !important; }
#title h1 { margin: 0; font-size: 1.2rem; white-space: nowrap; }
#backends { flex: 1 1 auto !important; min-width: 0 !important; font-size: 0.8rem; white-space: nowrap;
  overflow: hidden; text-overflow: ellipsis; color: var(--body-text-color-subdued); }
#backends p { margin: 0; overflow: hidden; text-overflow: ellipsis; }
#models-info { flex: 0 0 auto !important; width: auto !important; min-width: 110px !important; padding: 2px 8px !important; }
#models-info > button { padding: 2px 0 !important; font-size: 0.85rem; }
#models-info[open], #models-info:has(#backends-details) { position: relative; }
#backends-details { font-size: 0.78rem; line-height: 1.35; white-space: normal; max-width: 70vw; }
#backends-details p { margin: 0; }
#backends-details code { font-size: 0.75rem; padding: 0 3px; }
#workspace { gap: 10px !important; flex-wrap: nowrap !important; }
.step { gap: 6px !important; padding: 8px !important; }
.step-title h3 { margin: 0 !important; font-size: 0.95rem; }
#status { min-height: 1.4em; position: static !important; }
/* Progress, queue position and "preparing" float over the top of the photo, which stays visible and
   takes clicks through them (their tracker lives in #status: show_progress_on). */
#view-column { position: relative; }
#status > [data-testid="status-tracker"]:not(.hide) { top: 50px !important; left: 10px !important;
  right: 10px !important; bottom: auto !important; width: auto !important; height: auto !important;
  min-height: 40px; padding: 4px 10px !important; border-radius: 8px; pointer-events: none; z-index: 20;
  background: rgba(255, 255, 255, 0.78) !important; box-shadow: 0 1px 4px rgba(0, 0, 0, 0.25); }
#status > [data-testid="status-tracker"]:not(.hide) svg { max-height: 32px; }
#examples .grid-container { padding-top: 2px !important; grid-auto-rows: 66px !important; }
#examples .thumbnail-item { height: 66px !important; }
#under-canvas { gap: 8px !important; flex-wrap: nowrap !important; }
#candidates .grid-container { padding-top: 2px !important; grid-auto-rows: 66px !important; }
#candidates .thumbnail-item { height: 66px !important; }
#candidates .caption-label { font-size: 0.75rem; }
footer { position: fixed !important; right: 12px; bottom: 0; margin: 0 !important; padding: 0 4px !important; z-index: 10;
  font-size: 0.7rem; opacity: 0.75; background: var(--background-fill-primary); }
.gradio-container > .main { padding-bottom: 0 !important; }
#status p { margin: 0; }
#canvas img { cursor: crosshair; }
#canvas { position: relative; }
#zoom-badge { position: absolute; left: 8px; top: 8px; z-index: 5; pointer-events: none; display: none;
  padding: 1px 6px; border-radius: 4px; font-size: 0.75rem; background: rgba(0, 0, 0, 0.6); color: #fff; }
#controls-column { max-height: calc(100vh - 56px); overflow-y: auto; flex-wrap: nowrap !important; }
#controls-column > * { flex-shrink: 0 !important; }
.compact-buttons { gap: 6px !important; }
.compact-buttons button { min-width: 0 !important; white-space: normal; line-height: 1.1;
  padding-left: 6px !important; padding-right: 6px !important; }
#click-mode { padding: 2px 6px !important; }
#click-mode > span[data-testid="block-info"] { display: none; }
#click-mode .info-text { white-space: nowrap; overflow: hidden; text-overflow: ellipsis; font-size: 0.72rem; margin: 0; }
#click-mode .wrap { gap: 4px !important; flex-wrap: wrap; }
#click-mode label { padding: 2px 6px !important; font-size: 0.82rem; white-space: nowrap; }
#grow, #feather { padding: 2px 8px !important; }
#grow .head, #feather .head { margin-bottom: 0 !important; }
#grow .head span, #feather .head span { white-space: nowrap; }
#grow .min_value, #grow .max_value, #feather .min_value, #feather .max_value { display: none; }
#options > button, #extend > button { padding: 4px 0 !important; }
#options > button span, #extend > button span { white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
#history-column .step { height: calc(100vh - 56px); }
#history { flex: 1 1 auto; }
#history .caption-label, #variations .caption-label { white-space: normal !important; overflow: visible !important;
  font-size: 0.75rem; line-height: 1.2; max-width: 100% !important; }
.hidden-trigger { display: none !important; }
"""


def default_examples() -> list[Path]:
    return [ASSETS / name for name in EXAMPLE_NAMES if (ASSETS / name).is_file()]


def launch_options() -> dict[str, Any]:
    """Looks passed to `launch()` (Gradio 6 takes theme and CSS there)."""
    return {"css": CSS, "theme": gr.themes.Soft(primary_hue="blue")}


class DownloadProgress(Protocol):
    """The downloads in progress (build.py's `weights.Downloads`), one line each."""

    def lines(self) -> list[str]: ...


def backends_markdown(engine: Engine, downloads: DownloadProgress | None = None) -> str:
    """The header: what runs each operation (`Engine.status()`), and the downloads in progress."""
    backends = engine.backends
    text = (f"**Select:** {backends.segmenter} · **Erase:** {backends.eraser} · "
            f"**Fill, background, extend:** {backends.inpainter} · **Select by name:** {backends.detector} · "
            f"**Upscale:** {backends.upscaler} · **Device:** {backends.device}")
    for line in downloads.lines() if downloads is not None else []:
        text += f"  \n⏳ {plain_markdown(line)} (reload to see the model once it is ready)"
    if backends.hint:
        text += f"  \n⚠️ Models missing, fallbacks in use: {backends.hint}"
    for error in backends.errors:
        text += f"  \n⚠️ {plain_markdown(error)}"
    return text


def backends_summary(engine: Engine, downloads: DownloadProgress | None = None) -> str:
    """The header's one line: the model of each operation by name; the details are behind the Models fold."""
    backends = engine.backends
    short = lambda line: re.split(r" \(|: |, ", line, maxsplit=1)[0]  # noqa: E731 - "edgetam (…) on cpu" -> "edgetam"
    text = (f"Select: {short(backends.segmenter)} · Erase: {short(backends.eraser)} · "
            f"Fill: {short(backends.inpainter)} · By name: {short(backends.detector)} · "
            f"Upscale: {short(backends.upscaler)} · {backends.device}")
    warnings = bool(backends.hint or backends.errors)
    busy = downloads is not None and downloads.lines()
    return plain_markdown(text) + (" · ⏳ downloading" if busy else "") + (" · ⚠️ see Models" if warnings else "")


def header_lines(engine: Engine, downloads: DownloadProgress | None = None) -> tuple[str, str]:
    """(the header's line, the details behind the Models fold), as each page load finds them."""
    return backends_summary(engine, downloads), backends_markdown(engine, downloads)


def session_store(config: Config) -> SessionStore:
    server = config.server
    return SessionStore(Path(server.sessions_dir), server.session_memory_mb * 2**20,
                        server.session_ttl_minutes * 60.0, feather_px=config.composite.feather)


def build_ui(engine: Engine, config: Config, examples: list[Path] | None = None,
             sessions: SessionStore | None = None, downloads: DownloadProgress | None = None) -> gr.Blocks:
    """The editor page for one shared engine; each browser tab gets its own `Session`."""
    examples = default_examples() if examples is None else examples
    handlers = Handlers(engine, config, examples, session_store(config) if sessions is None else sessions)
    with gr.Blocks(title="Photo editor", delete_cache=(3600, 24 * 3600), fill_width=True) as demo:
        # Plain data only: Gradio deep-copies a state's value (and its callbacks) per tab and per
        # /config request, so the state holds the session's id, never an object holding a model.
        state = gr.State(None, time_to_live=config.server.session_ttl_minutes * 60)
        saved_id = gr.Textbox(visible=False)
        with gr.Row(elem_id="header"):
            gr.Markdown("# Photo editor", elem_id="title")
            header = gr.Markdown(backends_summary(engine, downloads), elem_id="backends")
            with gr.Accordion("Models", open=False, elem_id="models-info"):
                details = gr.Markdown(backends_markdown(engine, downloads), elem_id="backends-details")
        with gr.Row(equal_height=False, elem_id="workspace"):
            with gr.Column(scale=5, min_width=400, elem_id="view-column"):
                view = _view_column(examples)
            with gr.Column(scale=3, min_width=330, elem_id="controls-column"):
                controls = _controls_column(config, control_settings(missing_models(engine)), engine.inpaint_models())
            with gr.Column(scale=1, min_width=210, elem_id="history-column"):
                controls.update(_history_column())
        tooltips = gr.Textbox(visible=False)
        _wire(handlers, config, state, view, controls)
        _wire_tab(demo, handlers, config, state, saved_id, view, controls)
        # The models load behind the page: each page load shows what loaded and what failed.
        demo.load(functools.partial(header_lines, engine, downloads), None, [header, details],
                  concurrency_limit=None, api_visibility="private")
        _wire_controls(demo, handlers, controls, tooltips)
        _api(Api(engine, config), config)
    return demo


def _photo_outputs(view: dict[str, Any], controls: dict[str, Any]) -> list[Any]:
    """What changes when the working photo changes; the order of `Handlers._photo_outputs`."""
    return [view["status"], view["canvas"], controls["history"], view["result"], controls["download"],
            controls["variations"], controls["undo"], controls["redo"]]


def _view_column(examples: list[Path]) -> dict[str, Any]:
    with gr.Tabs():
        with gr.Tab("Select", id="select"):
            canvas = gr.Image(
                elem_id="canvas", format="png", type="filepath", interactive=True, sources=["upload", "clipboard"],
                show_label=False, height=CANVAS_HEIGHT, buttons=["fullscreen"],
                placeholder="Drop a photo here, click to upload, or pick an example below",
            )
        with gr.Tab("Before / after", id="compare"):
            result = gr.ImageSlider(elem_id="result", format="png", show_label=False, interactive=False,
                                    max_height=CANVAS_HEIGHT)
    status = gr.Markdown("Drop a photo on the canvas or pick an example.", elem_id="status")
    with gr.Row(elem_classes="hidden-trigger"):  # what the page's script presses: keys, a dragged box
        dragged = gr.Textbox(elem_id="drag-box", show_label=False, container=False)
        drag_go = gr.Button(elem_id="drag-box-go")
        point = gr.Textbox(elem_id="point", show_label=False, container=False)
        point_go = gr.Button(elem_id="point-go")
        zoom_region = gr.Textbox(elem_id="zoom-region", show_label=False, container=False)
        zoom_go = gr.Button(elem_id="zoom-region-go")
        zoom_detail = gr.Image(elem_id="zoom-detail", format="png", show_label=False, container=False,
                               interactive=False)
        zoom_placed = gr.Textbox(elem_id="zoom-placed", show_label=False, container=False)
        painted = gr.Textbox(elem_id="stroke", show_label=False, container=False)
        paint_go = gr.Button(elem_id="stroke-go")
        key_undo = gr.Button(elem_id="key-undo")
        key_redo = gr.Button(elem_id="key-redo")
    with gr.Row(elem_id="under-canvas"):
        # A first click alone is ambiguous (a part, the object, a group): its masks, to choose from.
        candidates = gr.Gallery(label="Which did you mean? Click one", elem_id="candidates", format="png",
                                columns=3, rows=1, height=76, allow_preview=False, object_fit="contain",
                                fit_columns=False, buttons=[], visible=False, scale=1, min_width=240)
        example_gallery = gr.Gallery([str(path) for path in examples], label="Example photos", elem_id="examples",
                                     columns=8, rows=1, height=76, allow_preview=False, object_fit="cover",
                                     fit_columns=False, buttons=[], scale=2)
    return dict(candidates=candidates, canvas=canvas, result=result, status=status, examples=example_gallery,
                zoom_region=zoom_region, zoom_go=zoom_go, zoom_detail=zoom_detail, zoom_placed=zoom_placed,
                dragged=dragged, drag_go=drag_go, point=point, point_go=point_go, painted=painted, paint_go=paint_go,
                key_undo=key_undo, key_redo=key_redo)


def _wire_controls(demo: gr.Blocks, handlers: Handlers, controls: dict[str, Any], tooltips: gr.Textbox) -> None:
    """Each page load turns off the controls of a missing model (or one that failed to load since)."""
    outputs = [controls[CONTROL_KEYS[elem_id]] for elem_id in NEEDS_INPAINTER + NEEDS_DETECTOR]
    demo.load(None, None, None, js=ENTER_APPLIES, concurrency_limit=None, api_visibility="private")
    demo.load(None, None, None, js=CANVAS_SCRIPT, concurrency_limit=None, api_visibility="private")
    demo.load(handlers.controls, None, [*outputs, tooltips], concurrency_limit=None, api_visibility="private").then(
        None, [tooltips], None, js=SET_TOOLTIPS, concurrency_limit=None, api_visibility="private")


def _controls_column(config: Config, settings: dict[str, dict[str, Any]], models: tuple[str, ...]) -> dict[str, Any]:
    """`settings`: the initial settings of the controls an optional model serves (`control_settings`);
    `models`: the inpainting models to choose among (a choice is shown only when there are several)."""
    defaults = config.inpaint
    ranges = config.limits.ranges  # the engine accepts exactly these: a slider never refuses a default
    with gr.Column(variant="panel", elem_classes="step"):
        gr.Markdown("### 1 · Select", elem_classes="step-title")
        with gr.Row(elem_classes="compact-buttons"):
            query = gr.Textbox(show_label=False, elem_id="select-text", lines=1, max_lines=1, container=False,
                               scale=3, **settings["select-text"])
            find = gr.Button("Select by name", elem_id="select-by-name", size="sm", scale=1,
                             **settings["select-by-name"])
        mode = gr.Radio(label="A click on the photo adds", elem_id="click-mode",
                        **{"value": "add", **settings["click-mode"]})
        with gr.Row(elem_classes="compact-buttons"):
            undo_click = gr.Button("↶ Undo click", size="sm", elem_id="undo-click")
            clear = gr.Button("Clear", size="sm", elem_id="clear")
            invert = gr.Button("Invert", size="sm", elem_id="invert")
        with gr.Row(elem_classes="compact-buttons"):
            add_part = gr.Button("+ Add another object", size="sm", elem_id="add-object")
            subtract_part = gr.Button("− Subtract an object", size="sm", elem_id="subtract-object")
        with gr.Row():
            grow = gr.Slider(ranges.grow.low, ranges.grow.high, value=config.composite.grow, step=ranges.grow.step,
                             label="Grow", elem_id="grow")
            feather = gr.Slider(ranges.feather.low, ranges.feather.high, value=config.composite.feather,
                                step=ranges.feather.step, label="Soft edge", elem_id="feather")
    with gr.Column(variant="panel", elem_classes="step"):
        gr.Markdown("### 2 · Edit", elem_classes="step-title")
        prompt = gr.Textbox(show_label=False, elem_id="prompt", lines=1, max_lines=3, container=False,
                            placeholder="Prompt: what to paint in, or the new background")
        with gr.Row(elem_classes="compact-buttons"):
            fill = gr.Button("Fill", variant="primary", elem_id="fill", size="md", **settings["fill"])
            erase = gr.Button("Erase", variant="primary", elem_id="erase", size="md")
            background = gr.Button("Replace background", variant="primary", elem_id="background", size="md",
                                   scale=2, **settings["background"])
            cancel = gr.Button("Cancel", variant="stop", elem_id="cancel", size="md")
        with gr.Row(elem_classes="compact-buttons"):  # after an edit: the same area, another seed
            again = gr.Button("↻ Generate again", elem_id="again", size="sm")
            use_seed = gr.Button("Use this seed", elem_id="use-seed", size="sm")
        title = "Options: negative prompt, steps, seed, variations" + (", model" if len(models) > 1 else "")
        with gr.Accordion(title, open=False, elem_id="options"):
            model = gr.Dropdown([(Path(name).name or name, name) for name in models],
                                value=models[0] if models else None, visible=len(models) > 1, elem_id="inpaint-model",
                                label="Inpainting model (the others load when chosen, within the memory budget)")
            negative = gr.Textbox(defaults.negative_prompt, label="Negative prompt (Fill, Replace background)",
                                  elem_id="negative-prompt", lines=1)
            with gr.Row():
                steps = gr.Slider(ranges.steps.low, ranges.steps.high, value=defaults.steps, step=ranges.steps.step,
                                  label="Steps", elem_id="steps")
                guidance = gr.Slider(ranges.guidance.low, ranges.guidance.high, value=defaults.guidance,
                                     step=ranges.guidance.step, label="Guidance", elem_id="guidance")
            with gr.Row():
                strength = gr.Slider(ranges.strength.low, ranges.strength.high, value=defaults.strength,
                                     step=ranges.strength.step, label="Strength (Fill, Replace background)",
                                     elem_id="strength")
                count = gr.Slider(ranges.variations.low, ranges.variations.high, value=defaults.num_images,
                                  step=ranges.variations.step, label="Variations", elem_id="variations-count")
            with gr.Row():
                seed = gr.Number(-1, precision=0, label="Seed (-1 = random; the seed used is shown after each run)",
                                 elem_id="seed")
                generative = gr.Checkbox(label="Generative erase (the inpainting model, slower)",
                                         elem_id="generative-erase", **{"value": False, **settings["generative-erase"]})
        extend = _extend_controls(settings["outpaint"])
        with gr.Row(elem_classes="compact-buttons"):  # the whole photo: no selection, no prompt
            upscale_2 = gr.Button("Upscale ×2", elem_id="upscale-2", size="sm")
            upscale_4 = gr.Button("Upscale ×4", elem_id="upscale-4", size="sm")
        variations = gr.Gallery(label="Variations: click the one to continue with", elem_id="variations",
                                format="png", columns=2, rows=1, height=190, allow_preview=False, visible=False,
                                fit_columns=False, object_fit="contain", buttons=[])
    return dict(query=query, find=find, mode=mode, undo_click=undo_click, clear=clear, invert=invert, add_part=add_part,
                subtract_part=subtract_part, grow=grow, feather=feather, prompt=prompt, fill=fill, erase=erase,
                background=background, cancel=cancel, negative=negative, steps=steps, guidance=guidance,
                strength=strength, count=count, seed=seed, generative=generative, model=model, variations=variations,
                upscale_2=upscale_2, upscale_4=upscale_4, again=again, use_seed=use_seed, **extend)


def _history_column() -> dict[str, Any]:
    """Step 3: the history as a column of thumbnails as tall as the window, the newest kept in view."""
    with gr.Column(variant="panel", elem_classes="step"):
        gr.Markdown("### 3 · History", elem_classes="step-title")
        with gr.Row(elem_classes="compact-buttons"):
            undo = gr.Button("↶ Undo", elem_id="undo", interactive=False, size="sm", min_width=60)
            redo = gr.Button("↷ Redo", elem_id="redo", interactive=False, size="sm", min_width=60)
        download = gr.DownloadButton("⬇ Download PNG", elem_id="download", interactive=False, size="sm")
        cutout = gr.DownloadButton("⬇ Cut-out PNG", elem_id="cutout", interactive=False, size="sm")
        history = gr.Gallery(label="Versions: click one to go back to it", elem_id="history", format="png",
                             columns=1, height="calc(100vh - 250px)", allow_preview=False, object_fit="contain",
                             fit_columns=False, buttons=[])
    return dict(undo=undo, redo=redo, download=download, cutout=cutout, history=history)


def _extend_controls(button_settings: dict[str, Any]) -> dict[str, Any]:
    """Extend canvas (outpainting): a target aspect, or the pixels per side; the prompt box says
    what to paint there (empty: continue the scene)."""
    with gr.Accordion("Extend canvas: a wider or taller photo", open=False,
                      elem_id="extend"):
        aspect = gr.Dropdown([("none: the pixels per side below", "none"), *[(a, a) for a in ASPECTS]],
                             value="none", label="Target aspect (grows the width or the height, evenly on both sides)",
                             elem_id="extend-aspect")
        with gr.Row():
            sides = {side: gr.Number(0, precision=0, minimum=0, label=f"{side.capitalize()} (px)",
                                     elem_id=f"extend-{side}", min_width=60) for side in SIDES}
        button = gr.Button("Extend canvas", variant="primary", elem_id="outpaint", size="md", **button_settings)
    return dict(extend_aspect=aspect, outpaint=button, **{f"extend_{side}": box for side, box in sides.items()})


SELECT_QUEUE, GENERATE_QUEUE = "select", "generate"  # Gradio concurrency ids


def queues(config: Config) -> tuple[dict[str, Any], dict[str, Any]]:
    """The event options of the two model queues: (selection, generation)."""
    return (dict(concurrency_id=SELECT_QUEUE, concurrency_limit=1),
            dict(concurrency_id=GENERATE_QUEUE, concurrency_limit=config.server.concurrency))


def progress_on_status(view: dict[str, Any]) -> dict[str, Any]:
    """Progress, queue position and "preparing" in the status line's tracker (floated over the top of
    the photo by the CSS, which keeps the photo shown and clickable), never in place of the photo."""
    return dict(show_progress="full", show_progress_on=[view["status"]])


def _wire(handlers: Handlers, config: Config, state: gr.State, view: dict[str, Any], controls: dict[str, Any]) -> None:
    selecting, generating = queues(config)
    segmenting = dict(**selecting, api_visibility="private", **progress_on_status(view))
    generate = dict(**generating, api_visibility="private", **progress_on_status(view))
    quick = dict(concurrency_limit=None, api_visibility="private", show_progress="hidden")  # what is near-instant
    quick_photo = dict(quick, **progress_on_status(view))  # opening a photo, history moves: seconds at 24 MP
    canvas, status = view["canvas"], view["status"]
    selection_out = [status, canvas]
    photo_out = _photo_outputs(view, controls)
    bind = handlers.bind
    photo = lambda fn: guard(bind(fn), len(photo_out))  # noqa: E731
    select = lambda fn: guard(bind(fn), len(selection_out))  # noqa: E731
    # After every change of the working photo, outside the model's queue: the download PNG;
    # then, in the selection queue, the new photo's embedding, so the next click is fast.
    download = dict(fn=bind(handlers.download), inputs=[state], outputs=[controls["download"]], **quick)
    prepare = dict(fn=guard(bind(handlers.prepare), 1), inputs=[state, status], outputs=[status], **segmenting)
    prepare_quietly = dict(fn=guard(bind(handlers.prepare_quietly), 1), inputs=[state], outputs=[status],
                           **segmenting)

    def photo_changed(event: Any) -> None:
        event.then(**download).then(**prepare_quietly)

    # Opening a photo: read the file as uploaded (no re-encoding), then embed it for SAM at once.
    canvas.upload(photo(handlers.upload), [state, canvas], photo_out, preprocess=False, **quick_photo).then(**prepare)
    view["examples"].select(photo(handlers.pick_example), [state], photo_out, **quick_photo).then(**prepare)
    canvas.clear(guard(bind(handlers.canvas_cleared), 1), [state], [status], **quick)
    # The canvas draws the photo and the selection (grow and soft edge included): each change of it
    # remakes the cut-out PNG, outside the model's queue; the button is off while nothing is selected.
    canvas.change(bind(handlers.cutout), [state], [controls["cutout"]], **quick)
    # ... and offers the candidate masks of a first click alone (after the click's own answer is shown).
    canvas.change(quietly(bind(handlers.candidates), gr.Gallery(visible=False)), [state], [view["candidates"]],
                  **dict(segmenting, show_progress="hidden"))
    view["candidates"].select(select(handlers.choose_candidate), [state], selection_out, **segmenting)

    # Selecting: each click runs the segmenter (in its own queue, never behind an edit), then redraws the canvas.
    canvas.select(select(handlers.click), [state, controls["mode"]], selection_out, **segmenting)
    for trigger in (controls["find"].click, controls["query"].submit):
        trigger(select(handlers.select_by_name), [state, controls["query"]], selection_out, **segmenting)
    # Every box and zoomed click counts, in order (a button's default drops a press while the last runs).
    view["drag_go"].click(select(handlers.drag_box), [state, view["dragged"]], selection_out, **segmenting,
                          trigger_mode="multiple")
    view["point_go"].click(select(handlers.point), [state, controls["mode"], view["point"]], selection_out,
                           **segmenting, trigger_mode="multiple")
    controls["undo_click"].click(select(handlers.undo_click), [state], selection_out, **segmenting)
    controls["clear"].click(select(handlers.clear), [state], selection_out, **segmenting)
    controls["invert"].click(select(handlers.invert), [state], selection_out, **segmenting)
    controls["add_part"].click(select(functools.partial(handlers.new_part, subtract=False)), [state],
                               selection_out, **segmenting)
    controls["subtract_part"].click(select(functools.partial(handlers.new_part, subtract=True)), [state],
                                    selection_out, **segmenting)
    for slider in (controls["grow"], controls["feather"]):
        slider.release(select(handlers.refine), [state, controls["grow"], controls["feather"]], selection_out,
                       **segmenting)
    # Zoomed in: the part in view at full resolution (the latest asked for; an older one is dropped).
    view["zoom_go"].click(quietly(bind(handlers.zoom_detail), (gr.skip(), gr.skip())), [state, view["zoom_region"]],
                          [view["zoom_detail"], view["zoom_placed"]], **dict(segmenting, show_progress="hidden"),
                          trigger_mode="always_last")
    # A brush stroke (Brush + or −), applied as it ends, at full resolution.
    view["paint_go"].click(select(handlers.stroke), [state, controls["mode"], view["painted"]], selection_out,
                           **segmenting, trigger_mode="multiple")

    # Editing: mark the session busy at once (so Cancel works while waiting, and the history
    # stays put), then queue the model work; afterwards the history buttons come back.
    options = [controls[name] for name in ("prompt", "negative", "steps", "guidance", "strength", "seed", "count",
                                           "generative")]
    history_buttons = [controls["undo"], controls["redo"]]
    extend = [controls["extend_aspect"], *(controls[f"extend_{side}"] for side in SIDES)]
    model = [controls["model"]]  # last: the handlers take it as the keyword `model`
    edits = [(controls[mode].click, functools.partial(handlers.edit, mode), options + model)
             for mode in ("fill", "erase", "background")]
    edits += [(controls["prompt"].submit, handlers.edit_last, options + extend + model),
              (controls["outpaint"].click, handlers.outpaint, options + extend + model),
              (controls["again"].click, handlers.again, options + extend + model)]
    edits += [(controls[f"upscale_{factor}"].click, functools.partial(handlers.edit, f"upscale-{factor}"), options)
              for factor in (2, 4)]
    runs = []  # Cancel drops them from the queue at once; their `edit_ended` runs all the same
    for trigger, run, inputs in edits:
        edit = trigger(guard(bind(handlers.begin_edit), 3), [state], [status, *history_buttons], **quick).then(
            photo(run), [state, *inputs], photo_out, **generate)
        runs.append(edit)
        photo_changed(edit.then(bind(handlers.edit_ended), [state], history_buttons, **quick))
    controls["cancel"].click(guard(bind(handlers.cancel), 1), [state], [status], cancels=runs, **quick)
    photo_changed(controls["variations"].select(photo(handlers.choose_variation), [state], photo_out,
                                                **quick_photo))

    controls["use_seed"].click(guard(bind(handlers.use_seed), 2), [state], [status, controls["seed"]], **quick)

    # History (the keys undo and redo the last selection step first: `Handlers.undo_key`).
    photo_changed(view["key_undo"].click(photo(handlers.undo_key), [state], photo_out, **quick_photo))
    photo_changed(view["key_redo"].click(photo(handlers.redo_key), [state], photo_out, **quick_photo))
    photo_changed(controls["undo"].click(photo(handlers.undo), [state], photo_out, **quick_photo))
    photo_changed(controls["redo"].click(photo(handlers.redo), [state], photo_out, **quick_photo))
    photo_changed(controls["history"].select(photo(handlers.goto), [state], photo_out, **quick_photo))


def _wire_tab(demo: gr.Blocks, handlers: Handlers, config: Config, state: gr.State, saved_id: gr.Textbox,
              view: dict[str, Any], controls: dict[str, Any]) -> None:
    """Opening the page restores the tab's session (a reload loses nothing); closing it stops its edit."""
    quick = dict(concurrency_limit=None, api_visibility="private", show_progress="hidden")
    outputs = [state, saved_id, *_photo_outputs(view, controls), controls["grow"], controls["feather"]]
    demo.load(handlers.restore, [saved_id], outputs, js=READ_TAB_ID, **dict(quick, **progress_on_status(view))).then(
        None, [saved_id], None, js=SAVE_TAB_ID, **quick).then(
        handlers.bind(handlers.download), [state], [controls["download"]], **quick).then(
        guard(handlers.bind(handlers.prepare_quietly), 1), [state], [view["status"]], api_visibility="private",
        **queues(config)[0])
    demo.unload(handlers.tab_closed)


def _api(api: Api, config: Config) -> None:
    """Hidden components carrying the stateless endpoints' inputs and outputs. The endpoints take
    their inputs raw (`preprocess=False`): Gradio would open a file argument's path before the
    editor could check that it was uploaded, and turn a wrong value into an error without a message."""
    selecting, generating = queues(config)
    select, generate = dict(**selecting, preprocess=False), dict(**generating, preprocess=False)
    with gr.Column(visible=False):
        image = gr.Image(type="filepath", image_mode=None, format="png", label="image")
        mask = gr.Image(type="filepath", image_mode=None, format="png", label="mask")
        points = gr.Textbox(label="points", info="JSON: [[x, y], [x, y, 0], ...]; label 1 = object, 0 = not")
        box = gr.Textbox(label="box", info="JSON: [x1, y1, x2, y2], or empty")
        prompt = gr.Textbox(label="prompt")
        query = gr.Textbox(label="query", info="what to select, e.g. 'dog' or 'person, bicycle'")
        options = gr.Textbox(label="options", info='JSON, e.g. {"steps": 30, "seed": 7, "num_images": 2}')
        mask_out = gr.Image(format="png", image_mode="L", label="mask")
        images_out = gr.Gallery(format="png", label="variations")
        info_out = gr.JSON(label="metadata")
        trigger = gr.Button()
    trigger.click(api.segment, [image, points, box], [mask_out], api_name="segment", **select)
    trigger.click(api.select_by_text, [image, query], [mask_out, info_out], api_name="select_by_text", **select)
    trigger.click(api.fill, [image, mask, prompt, options], [images_out, info_out], api_name="fill", **generate)
    trigger.click(api.erase, [image, mask, options], [images_out, info_out], api_name="erase", **generate)
    trigger.click(api.replace_background, [image, mask, prompt, options], [images_out, info_out],
                  api_name="replace_background", **generate)

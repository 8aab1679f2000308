"""The model kinds as Ray Serve deployments: what runs in each replica (`serving.backend: ray`).

Each replica plans and loads its kind's model from the same settings as the app would
(`build.plan_backends`, `build.build_model`), at start, so a replica is ready only once its model
is loaded (or its failure remembered). Messages stay small: photos and masks travel as PNG
bytes, clicks as coordinates, a selection as its PNG plus the low-resolution logits. The image
embedding stays in the segmenter replica that computed it: clicks carry the photo's key as
Serve's multiplexed model id, so they are routed to the replica that holds it, and the embedding
is also put in Ray's object store once, so a replica that gets a click first (before the routing
knows, or after a restart) fetches it instead of encoding the photo again.

Model calls run in a worker thread (`asyncio.to_thread`): the replica's event loop stays free
for health checks and for the cancel of a generation.
"""
from __future__ import annotations

import asyncio
import os
import threading
from collections import OrderedDict
from dataclasses import replace
from typing import Any

import numpy as np
import ray
from ray import serve

from editor.core.config import Config
from editor.core.errors import EditCancelled, ModelLoadError
from editor.core.prompts import Detection, Prompts
from editor.models.base import ImageRef, InpaintRequest, Kind, choose_inpainter, inpainter_names
from editor.serving.messages import Info, decode_png, encode_png

IMAGES_KEPT = 8  # decoded photos a segmenter replica holds for GrabCut (the app owns the photos)
SHARED_KEPT = 8  # embeddings a segmenter replica keeps in the object store for other replicas
MODELS_PER_REPLICA = 16  # multiplexed ids a replica is routed by: photo keys, model names (the caches bound memory)


class _Replica:
    """One kind's model, loaded at start, and what the app needs to know of it."""

    def __init__(self, config: Config, kind: Kind) -> None:
        from editor.build import build_inpainter, build_model, describe, plan_backends

        self.kind = kind
        self.config = config
        plan = plan_backends(config)
        self.backends = describe(plan, config)
        description = getattr(self.backends, kind)
        self.model: Any = (build_inpainter(plan, config, description, show_progress=False) if kind == "inpainter"
                           else build_model(plan.choice(kind), config, plan.device, description, show_progress=False))
        self.device = plan.device
        self.replica = f"{kind}-{os.getpid()}"
        try:
            if self.model is not None:
                self.model.load()
        except ModelLoadError:
            pass  # remembered by the model: its load_error says why, and the app shows the fallback

    def info(self) -> Info:
        model = self.model
        return Info(kind=self.kind, replica=self.replica, device=self.device,
                    description=str(getattr(model, "description", "")), model_name=str(getattr(model, "model_name", "")),
                    load_error=getattr(model, "load_error", None), backends=self.backends,
                    attributes={name: getattr(model, name) for name in ("multiple", "max_side", "native_size",
                                                                         "scale", "tile") if hasattr(model, name)})

    def load(self) -> None:
        if self.model is not None:
            self.model.load()

    @serve.multiplexed(max_num_models_per_replica=MODELS_PER_REPLICA)
    async def _route(self, model_id: str) -> str:
        """Registers a multiplexed id (a photo's key, an inpainting model's name) with Serve's router,
        so that its requests come to this replica, which holds its embedding or pipeline."""
        return model_id


class SegmenterReplica(_Replica):
    def __init__(self, config: Config) -> None:
        super().__init__(config, "segmenter")
        self.encoded = 0  # encoder runs in this replica: what the click-routing test counts
        self._images: OrderedDict[str, np.ndarray] = OrderedDict()  # GrabCut selects on the photo itself
        self._shared: OrderedDict[str, ray.ObjectRef] = OrderedDict()
        self._lock = threading.Lock()

    async def prepare(self, photo_png: bytes) -> dict[str, Any]:
        key = serve.get_multiplexed_model_id()
        await self._route(key)
        ref = await asyncio.to_thread(self._prepare, key, decode_png(photo_png))
        return {"ref": ref, "shared": [self._share(ref.key)], "replica": self.replica, "encoded": self.encoded}

    def _prepare(self, key: str, image: np.ndarray) -> ImageRef:
        embedding = getattr(self.model, "embedding", None)
        new = embedding is not None and embedding(key) is None
        ref = self.model.prepare(image)
        if ref.key != key:
            raise ValueError(f"the photo's key is {ref.key}, not {key}")
        with self._lock:
            self.encoded += new and embedding(key) is not None
            self._images[ref.key] = image
            self._images.move_to_end(ref.key)
            while len(self._images) > IMAGES_KEPT:
                self._images.popitem(last=False)
        return ref

    def _share(self, key: str) -> ray.ObjectRef | None:
        """The embedding in the object store (put once per photo), for a replica that lacks it."""
        embedding = getattr(self.model, "embedding", None)
        found = embedding(key) if embedding is not None else None
        if found is None:
            return None
        with self._lock:
            if key not in self._shared:
                self._shared[key] = ray.put(found)
                while len(self._shared) > SHARED_KEPT:
                    self._shared.popitem(last=False)
            return self._shared[key]

    async def segment(self, ref: ImageRef, prompts: Prompts, previous: np.ndarray | None,
                      shared: list[ray.ObjectRef | None]) -> dict[str, Any]:
        await self._route(ref.key)
        embedding = getattr(self.model, "embedding", None)
        if embedding is not None and embedding(ref.key) is None and shared and shared[0] is not None:
            try:
                self.model.adopt(ref, await shared[0])
            except ray.exceptions.RayError:
                pass  # the replica that put it is gone: ImageExpired below, and the app prepares again
        result = await asyncio.to_thread(self.model.segment, ref, prompts, previous)
        return {"mask": encode_png(result.mask), "logits": result.logits, "replica": self.replica,
                "encoded": self.encoded}


class EraserReplica(_Replica):
    def __init__(self, config: Config) -> None:
        super().__init__(config, "eraser")

    async def erase(self, image_png: bytes, mask_png: bytes) -> bytes:
        result = await asyncio.to_thread(self.model.erase, decode_png(image_png), decode_png(mask_png))
        return encode_png(result)


class InpainterReplica(_Replica):
    """inpaint.model, and inpaint.models beside it: one pool of pipelines under the memory budget. A request
    names its model as Serve's multiplexed id, so it goes to a replica that has painted with it lately."""

    def __init__(self, config: Config) -> None:
        super().__init__(config, "inpainter")

    def info(self) -> Info:
        info = super().info()
        sizes = {name: choose_inpainter(self.model, name).native_size for name in inpainter_names(self.model)}
        return replace(info, attributes={**info.attributes, "native_sizes": sizes})

    async def inpaint(self, image_png: bytes, mask_png: bytes, request: InpaintRequest):  # noqa: ANN201
        """Streams ("step", done, total) at each denoising step, then ("images", [PNG, ...]).

        A cancelled stream (the person pressed Cancel, or the app went away) stops the
        generation within its current step."""
        loop = asyncio.get_running_loop()
        steps: asyncio.Queue[tuple[int, int]] = asyncio.Queue()
        cancel = threading.Event()

        def progress(done: int, total: int) -> None:
            loop.call_soon_threadsafe(steps.put_nowait, (done, total))

        model_id = serve.get_multiplexed_model_id()
        if model_id:
            await self._route(model_id)
        model = choose_inpainter(self.model, request.model)
        image, mask = decode_png(image_png), decode_png(mask_png)
        work = asyncio.ensure_future(asyncio.to_thread(model.inpaint, image, mask, request, progress, cancel))
        try:
            while not work.done() or not steps.empty():
                step = asyncio.ensure_future(steps.get())
                await asyncio.wait({step, work}, return_when=asyncio.FIRST_COMPLETED)
                if step.done():
                    yield ("step", *step.result())
                else:
                    step.cancel()
            yield ("images", [encode_png(picture) for picture in work.result()])
        except (asyncio.CancelledError, GeneratorExit):
            cancel.set()  # the model raises EditCancelled at its next step
            raise
        finally:
            if not work.done():
                cancel.set()
                try:
                    await work
                except EditCancelled:
                    pass


class DetectorReplica(_Replica):
    def __init__(self, config: Config) -> None:
        super().__init__(config, "detector")

    async def detect(self, photo_png: bytes, queries: list[str]) -> list[Detection]:
        return await asyncio.to_thread(self.model.detect, decode_png(photo_png), queries)


class UpscalerReplica(_Replica):
    def __init__(self, config: Config) -> None:
        super().__init__(config, "upscaler")

    async def upscale(self, image_png: bytes) -> bytes:
        return encode_png(await asyncio.to_thread(self.model.upscale, decode_png(image_png)))


REPLICAS: dict[Kind, type[_Replica]] = {"segmenter": SegmenterReplica, "eraser": EraserReplica,
                                         "inpainter": InpainterReplica, "detector": DetectorReplica,
                                         "upscaler": UpscalerReplica}

"""The model interfaces of `models.base`, answered by Ray Serve deployments (`serving.backend: ray`).

The engine, the session and the page use these as they use the models in the app's process. A
call goes through the kind's deployment handle and waits for its answer in the calling thread
(the page's worker threads, never an event loop). Errors come back as the editor's own one-line
errors: a model's error as it was raised; a full queue as "busy, try again"; a replica that died
mid-request is tried once more on another (Ray replaces the dead one), then reported in one line.
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import numpy as np
from ray import exceptions as ray_errors
from ray.serve import exceptions as serve_errors
from ray.serve.handle import DeploymentHandle

from editor.core.errors import EditCancelled, EditorError, ModelUnavailableError
from editor.core.prompts import Detection, Prompts
from editor.models.base import ImageExpired, ImageRef, InpaintRequest, Kind, Progress, Segmentation
from editor.models.embedding_cache import ImageKeys
from editor.models.inpaint_pool import InpainterPool
from editor.serving.messages import Info, decode_png, encode_png

INFO_TTL_S = 2.0  # how long a replica's status (its load error) is trusted before it is asked again
PREPARED_KEPT = 32  # photos the app remembers as prepared (with the object-store reference of the embedding)
_DIED = (ray_errors.ActorDiedError, ray_errors.ActorUnavailableError, serve_errors.ReplicaUnavailableError,
         ray_errors.WorkerCrashedError, ray_errors.NodeDiedError)


class ServingError(ModelUnavailableError):
    """A model deployment could not answer (busy, gone, too slow); the person's work is untouched."""


class Deployment:
    """One kind's deployment handle: calls with the editor's errors, and the replica's status."""

    def __init__(self, kind: Kind, handle: DeploymentHandle, timeout_s: float) -> None:
        self.kind = kind
        self.handle = handle
        self.timeout_s = timeout_s
        self._info: Info | None = None
        self._asked = 0.0

    def info(self, fresh: bool = False) -> Info:
        if fresh or self._info is None or time.monotonic() - self._asked > INFO_TTL_S:
            self._info = self.call("info")
            self._asked = time.monotonic()
        return self._info

    def call(self, method: str, *args: Any, route: str | None = None) -> Any:
        """`method(*args)` on a replica (the one holding `route`, Serve's multiplexed id, when given)."""
        handle = self._options(method, route)
        for attempt in (1, 2):
            try:
                return handle.remote(*args).result(timeout_s=self.timeout_s)
            except _DIED as exc:
                if attempt == 2:
                    raise ServingError(f"the {self.kind} replica stopped during the request twice "
                                       f"({type(exc).__name__}): try again in a moment") from None
            except Exception as exc:
                raise as_editor_error(self.kind, exc) from None
        raise AssertionError("unreachable")

    def stream(self, method: str, *args: Any, route: str | None = None) -> Any:
        """The response generator of a streaming method (its items, each when it comes)."""
        return self._options(method, route, stream=True).remote(*args)

    def _options(self, method: str, route: str | None, stream: bool = False) -> DeploymentHandle:
        options: dict[str, Any] = {"method_name": method, "stream": stream}
        if route is not None:
            options["multiplexed_model_id"] = route
        return self.handle.options(**options)


def as_editor_error(kind: str, exc: BaseException) -> EditorError:
    """A deployment's failure as the editor's one-line error (a model's own error stays as it was)."""
    cause = getattr(exc, "cause", None)
    if isinstance(exc, EditorError):
        return exc
    if isinstance(cause, EditorError):
        return cause
    if isinstance(exc, serve_errors.BackPressureError):
        return ServingError(f"the {kind} is busy (its queue is full): try again in a moment")
    if isinstance(exc, TimeoutError):
        return ServingError(f"the {kind} did not answer in time (serving.request_timeout_s): try again")
    if isinstance(exc, _DIED):
        return ServingError(f"the {kind} replica stopped during the request ({type(exc).__name__}): try again")
    from editor.models.loading import one_line

    return ServingError(f"the {kind} deployment failed: {one_line(cause or exc)}")


class _RemoteModel:
    """What every remote model shares: its description and load error, as its replica reports them."""

    def __init__(self, deployment: Deployment) -> None:
        self.deployment = deployment
        first = deployment.info()  # the first ask of a new Deployment; a pool's members share its answer
        for name, value in first.attributes.items():
            setattr(self, name, value)
        self.model_name = first.model_name

    @property
    def description(self) -> str:
        return self.deployment.info().description

    @property
    def load_error(self) -> str | None:
        return self.deployment.info().load_error

    def load(self) -> None:
        self.deployment.call("load")


class RemoteSegmenter(_RemoteModel):
    """Clicks by the photo's key: the photo travels once per version, to the replica that embeds it."""

    def __init__(self, deployment: Deployment) -> None:
        super().__init__(deployment)
        self._keys = ImageKeys()
        self._prepared: OrderedDict[str, list[Any]] = OrderedDict()  # key -> [object-store ref of the embedding]
        self._lock = threading.Lock()
        self.encoder_runs: dict[str, int] = {}  # per replica, as last reported: encoder runs there

    def prepare(self, image: np.ndarray) -> ImageRef:
        key = self._keys(image)
        with self._lock:
            if key in self._prepared:
                self._prepared.move_to_end(key)
                return ImageRef(key, image.shape[1], image.shape[0])
        answer = self.deployment.call("prepare", encode_png(image), route=key)
        self._count(answer)
        with self._lock:
            self._prepared[key] = answer["shared"]
            while len(self._prepared) > PREPARED_KEPT:
                self._prepared.popitem(last=False)
        return answer["ref"]

    def segment(self, ref: ImageRef, prompts: Prompts, previous: np.ndarray | None = None) -> Segmentation:
        with self._lock:
            shared = self._prepared.get(ref.key, [None])
        try:
            answer = self.deployment.call("segment", ref, prompts, previous, shared, route=ref.key)
        except ImageExpired:
            with self._lock:
                self._prepared.pop(ref.key, None)  # the engine prepares it again, sending the photo
            raise
        self._count(answer)
        return Segmentation(decode_png(answer["mask"]), answer["logits"])

    def _count(self, answer: dict[str, Any]) -> None:
        with self._lock:
            self.encoder_runs[answer["replica"]] = answer["encoded"]


class RemoteEraser(_RemoteModel):
    multiple: int
    max_side: int

    def erase(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return decode_png(self.deployment.call("erase", encode_png(image), encode_png(mask)))


class RemoteInpainter(_RemoteModel):
    """A generation streamed from its replica: each step reaches `progress`; Cancel stops it there.

    `model` names one of the replicas' inpainting models (inpaint.models; "" the default): its
    requests carry that name as Serve's multiplexed id, to a replica that has it loaded."""

    native_size: int
    native_sizes: dict[str, int]  # each model the replicas hold, the default first

    def __init__(self, deployment: Deployment, model: str = "") -> None:
        super().__init__(deployment)
        if model:
            self.model_name, self.native_size = model, self.native_sizes[model]

    def inpaint(self, image: np.ndarray, mask: np.ndarray, request: InpaintRequest,
                progress: Progress | None = None, cancel: threading.Event | None = None) -> list[np.ndarray]:
        stream = self.deployment.stream("inpaint", encode_png(image), encode_png(mask),
                                        replace(request, model=self.model_name), route=self.model_name)
        for item in _items(stream, self.deployment):
            if cancel is not None and cancel.is_set():
                stream.cancel()  # the replica stops the generation within its step
                raise EditCancelled("generation cancelled")
            if item[0] == "step" and progress is not None:
                progress(item[1], item[2])
            elif item[0] == "images":
                return [decode_png(data) for data in item[1]]
        raise ServingError("the inpainter's stream ended without images: try again")


def _items(stream: Any, deployment: Deployment) -> Iterator[Any]:
    """A response stream's items, with the deployment's failures as the editor's errors."""
    try:
        yield from stream
    except Exception as exc:
        raise as_editor_error(deployment.kind, exc) from None


class RemoteDetector(_RemoteModel):
    def detect(self, image: np.ndarray, queries: list[str]) -> list[Detection]:
        return self.deployment.call("detect", encode_png(image), queries)


class RemoteUpscaler(_RemoteModel):
    scale: int
    tile: int

    def upscale(self, image: np.ndarray) -> np.ndarray:
        return decode_png(self.deployment.call("upscale", encode_png(image)))


def remote_inpainter(deployment: Deployment) -> RemoteInpainter | InpainterPool:
    """One client per inpainting model the replicas hold: a pool of them when there are several."""
    names = list(deployment.info(fresh=True).attributes.get("native_sizes", {}))
    if len(names) <= 1:
        return RemoteInpainter(deployment)
    return InpainterPool([RemoteInpainter(deployment, name) for name in names])


CLIENTS: dict[Kind, Callable[[Deployment], Any]] = {
    "segmenter": RemoteSegmenter, "eraser": RemoteEraser, "inpainter": remote_inpainter,
    "detector": RemoteDetector, "upscaler": RemoteUpscaler}

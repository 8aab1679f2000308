"""The simulated person: upload a photo, click one object three times, then fill or erase with its mask.

Run by `python -m editor loadtest` as `python -m locust -f THIS --headless`; LOADTEST_PHOTO names the photo,
LOADTEST_MODELS (a JSON list) the inpainting models a person's fills take turns with, each timed as
"/fill NAME" (none: the default model, "/fill").
Each API call is one Locust request, timed from its post to the end of its result stream.
"""
from __future__ import annotations

import itertools
import json
import os
from pathlib import Path

import requests
from locust import HttpUser, between, task

from editor.loadtest.gradio_http import call, download, upload

PHOTO = Path(os.environ.get("LOADTEST_PHOTO", "assets/chelsea.png"))
CLICKS = [[0.5, 0.5], [0.45, 0.4], [0.55, 0.6]]  # three points on the object in the middle, as fractions
NUMBERS = itertools.count()
MODELS: list[str] = json.loads(os.environ.get("LOADTEST_MODELS", "[]"))


class EditingPerson(HttpUser):
    wait_time = between(0.1, 0.5)

    def on_start(self) -> None:
        self.number = next(NUMBERS)
        self.http = requests.Session()  # the calls are timed as one request each, not per HTTP exchange
        self.photo = PHOTO.read_bytes()
        width, height = json.loads(os.environ.get("LOADTEST_SIZE", "[451, 300]"))
        self.points = [[int(x * width), int(y * height)] for x, y in CLICKS]
        self.edits = 0
        self.fills = 0

    def timed(self, name: str, action):  # noqa: ANN001
        with self.environment.events.request.measure("API", name) as meta:
            result = action()
            meta["response_length"] = len(json.dumps(result)) if not isinstance(result, bytes) else len(result)
            return result
        return None

    @task
    def edit_a_photo(self) -> None:
        url = self.host.rstrip("/") + "/"
        photo = self.timed("upload", lambda: upload(self.http, url, PHOTO.name, self.photo))
        if photo is None:
            return
        mask = None
        for clicks in (1, 2, 3):
            points = json.dumps(self.points[:clicks])
            mask = self.timed("/segment", lambda: call(self.http, url, "segment", [photo, points, ""])[0])
        if mask is None:
            return
        mask_file = self.timed("upload mask", lambda: upload(self.http, url, "mask.png", download(self.http, mask)))
        if mask_file is None:
            return
        options = {"seed": self.number * 1000 + self.edits}
        if (self.number + self.edits) % 2 == 0:
            name = "/fill"
            if MODELS:
                options["model"] = MODELS[(self.number + self.fills) % len(MODELS)]
                name = f"/fill {Path(options['model']).name}"
            self.fills += 1
            self.timed(name, lambda: call(self.http, url, "fill", [photo, mask_file, "a plant", json.dumps(options)]))
        else:
            self.timed("/erase", lambda: call(self.http, url, "erase", [photo, mask_file, json.dumps(options)]))
        self.edits += 1

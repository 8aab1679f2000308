"""The app's Gradio API over plain HTTP (upload, call, SSE result), shared by the Locust user and the warm-up."""
from __future__ import annotations

import json
from typing import Any

import requests


class ApiError(Exception):
    """The app answered a call with an error event (or an HTTP error)."""


def upload(session: requests.Session, url: str, name: str, data: bytes) -> dict[str, Any]:
    answer = session.post(f"{url}gradio_api/upload", files={"files": (name, data)}, timeout=60)
    answer.raise_for_status()
    return {"path": answer.json()[0], "orig_name": name, "meta": {"_type": "gradio.FileData"}}


def call(session: requests.Session, url: str, api_name: str, data: list[Any], timeout: float = 600) -> Any:
    """One call: post it, read its event stream to the end; the `complete` data, or ApiError."""
    posted = session.post(f"{url}gradio_api/call/{api_name}", json={"data": data}, timeout=60)
    if posted.status_code != 200:
        raise ApiError(f"{api_name}: http {posted.status_code}")
    answer = session.get(f"{url}gradio_api/call/{api_name}/{posted.json()['event_id']}", timeout=timeout)
    event, payload = "", None
    for line in answer.text.splitlines():
        if line.startswith("event: "):
            event = line[len("event: "):]
        elif line.startswith("data: "):
            payload = line[len("data: "):]
    if event != "complete":
        raise ApiError(f"{api_name}: {event or 'no answer'}: {payload}")
    return json.loads(payload)


def download(session: requests.Session, file_data: dict[str, Any]) -> bytes:
    answer = session.get(file_data["url"], timeout=60)
    answer.raise_for_status()
    return answer.content

"""Files named by a request: only what was uploaded to this editor (or its own examples) is read."""
from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from gradio.utils import get_upload_folder

from editor.core.errors import EditorError, ImageError
from editor.ui.uploads import REFUSED, checked_upload

ROOT = Path(__file__).resolve().parent.parent
ASSETS = ROOT / "assets"


@pytest.fixture
def cache() -> Iterator[Path]:
    """A folder inside Gradio's upload cache, as an upload would make."""
    folder = Path(get_upload_folder()) / f"test-{uuid.uuid4().hex}"
    folder.mkdir(parents=True)
    try:
        yield folder
    finally:
        for path in sorted(folder.rglob("*"), reverse=True):
            path.unlink() if path.is_file() or path.is_symlink() else path.rmdir()
        folder.rmdir()


def refused(payload: object, roots: tuple[Path, ...] = ()) -> str:
    with pytest.raises(ImageError) as info:
        checked_upload(payload, roots)
    assert isinstance(info.value, EditorError)
    return str(info.value)


def test_an_uploaded_file_is_accepted_by_its_real_path(cache: Path) -> None:
    photo = cache / "photo.png"
    photo.write_bytes((ASSETS / "chelsea.png").read_bytes())
    expected = Path(os.path.realpath(photo))
    assert checked_upload({"path": str(photo), "meta": {"_type": "gradio.FileData"}}) == expected
    assert checked_upload({"path": str(photo)}) == expected
    assert checked_upload(str(photo)) == expected


def test_the_examples_folder_is_accepted_when_given() -> None:
    assert checked_upload({"path": str(ASSETS / "chelsea.png")}, (ASSETS,)) == (ASSETS / "chelsea.png").resolve()
    refused({"path": str(ASSETS / "chelsea.png")})  # not without it


def test_any_other_path_is_refused_with_one_message_that_says_nothing_of_the_file(tmp_path: Path,
                                                                                  cache: Path) -> None:
    secret = tmp_path / "secret.png"
    secret.write_bytes((ASSETS / "chelsea.png").read_bytes())
    (cache / "link.png").symlink_to(secret)
    (cache / "dir-link").symlink_to(tmp_path, target_is_directory=True)
    attempts = [
        {"path": str(secret)},
        {"path": str(tmp_path / "missing.png")},
        {"path": "/etc/passwd"},
        {"path": "/root"},
        {"path": str(tmp_path)},
        {"path": f"file://{secret}"},
        {"url": f"file://{secret}"},
        {"url": f"file://{secret}", "meta": {"_type": "gradio.FileData"}},
        {"url": "data:image/png;base64,iVBORw0KGgo="},
        {"path": str(cache / ".." / ".." / secret.relative_to("/"))},
        {"path": str(cache / "link.png")},  # a symlink in the cache to a file outside it
        {"path": str(cache / "dir-link" / "secret.png")},
        {"path": str(cache)},  # the folder itself, not a file
        {"path": str(cache / "not-uploaded.png")},
        {"path": ""},
        {"path": None},
        {"path": 5},
        {"path": ["/etc/passwd"]},
        str(secret),
        5,
        [str(secret)],
        {},
    ]
    messages = {refused(payload, (ASSETS,)) for payload in attempts}
    assert messages == {REFUSED}
    assert "\n" not in REFUSED and "exist" not in REFUSED


def test_nothing_sent_is_its_own_message() -> None:
    assert refused(None) != REFUSED

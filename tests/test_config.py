"""Settings: config.yaml plus `--set key=value` overrides, validated into typed objects."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from editor.core.config import Config, InpaintConfig, SegmenterConfig, load_config
from editor.core.errors import ConfigError, EditorError

ROOT = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def config_error(path: Path | None = None, overrides: list[str] | None = None) -> str:
    """The message of the ConfigError that loading raises; it must be one line."""
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides)
    message = str(info.value)
    assert message and "\n" not in message, f"not one line: {message!r}"
    assert isinstance(info.value, EditorError)
    return message


# --- what loads ------------------------------------------------------------------------------


def test_repo_config_yaml_equals_the_defaults() -> None:
    """The documented config.yaml and the code's defaults say the same thing."""
    assert load_config(ROOT / "config.yaml") == Config()


def test_no_file_gives_defaults_and_empty_file_too(tmp_path: Path) -> None:
    assert load_config(None) == Config()
    assert load_config(write(tmp_path, "")) == Config()
    assert load_config(write(tmp_path, "# only a comment\n", "c.yaml")) == Config()


def test_yaml_values_are_read_into_typed_fields(tmp_path: Path) -> None:
    path = write(tmp_path, """
device: cpu
models_dir: /data/models
auto_download: false
segmenter:
  model: /data/sam_vit_l.pth
  embedding_cache_mb: 3
inpaint:
  model: sdxl
  steps: 12
  guidance: 5          # an int where a float is expected is fine
  strength: 1
composite:
  grow: 0
  feather: 4
server:
  port: 9000
""")
    config = load_config(path)
    assert config.device == "cpu"
    assert config.models_dir == "/data/models"
    assert config.auto_download is False
    assert config.segmenter == SegmenterConfig(model="/data/sam_vit_l.pth", embedding_cache_mb=3)
    assert config.inpaint.model == "sdxl"
    assert config.inpaint.steps == 12
    assert config.inpaint.guidance == 5.0 and isinstance(config.inpaint.guidance, float)
    assert config.inpaint.strength == 1.0
    # Keys not in the file keep their defaults.
    assert config.inpaint.num_images == InpaintConfig().num_images
    assert config.composite.grow == 0 and config.composite.feather == 4
    assert config.composite.match_color is True
    assert config.server.port == 9000 and config.server.host == "127.0.0.1"


def test_overrides_win_over_the_file_and_apply_in_order(tmp_path: Path) -> None:
    path = write(tmp_path, "device: cuda\ninpaint:\n  steps: 12\n")
    config = load_config(path, ["device=cpu", "inpaint.steps=3", "inpaint.steps=4", "segmenter.model=edgetam"])
    assert config.device == "cpu"
    assert config.inpaint.steps == 4
    assert config.segmenter.model == "edgetam"


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda"])
def test_every_device_setting_is_accepted(device: str) -> None:
    assert load_config(None, [f"device={device}"]).device == device


def test_downloads_are_on_by_default_and_the_old_sam_keys_are_gone() -> None:
    assert Config().auto_download is True
    for old in ("sam.checkpoint=x.pth", "sam.model_type=vit_b", "sam.embedding_cache_mb=3"):
        with pytest.raises(ConfigError) as refused:
            load_config(None, [old])
        assert str(refused.value) == "unknown config key 'sam'"


@pytest.mark.parametrize("value", [
    "/abs/path/sam_vit_b_01ec64.pth", "relative/dir/sam.pth", "~/models/sam.pth", "C:/models/sam.pth",
    "with space/sam.pth",
])
def test_segmenter_model_paths_are_kept_as_text(value: str) -> None:
    assert load_config(None, [f"segmenter.model={value}"]).segmenter.model == value


@pytest.mark.parametrize("value", [
    "sdxl", "sd2", "auto", "sd2-community/stable-diffusion-2-inpainting", "./models/my-inpaint",
    "/abs/models/inpaint", "~/inpaint",
])
def test_inpaint_model_accepts_presets_hub_ids_and_folders(value: str) -> None:
    assert load_config(None, [f"inpaint.model={value}"]).inpaint.model == value


def test_override_values_are_parsed_as_yaml_scalars() -> None:
    config = load_config(None, [
        "auto_download=true", "inpaint.guidance=3", "inpaint.negative_prompt=ugly, blurry",
        "models_dir=123", "erase.prompt=",
    ])
    assert config.auto_download is True
    assert config.inpaint.guidance == 3.0
    assert config.inpaint.negative_prompt == "ugly, blurry"
    assert config.models_dir == "123"  # a number given for a text setting stays text
    assert config.erase.prompt == ""


def test_config_objects_are_immutable() -> None:
    config = load_config(None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.device = "cpu"  # type: ignore[misc]


# --- what is refused, with a one-line message naming the key --------------------------------


@pytest.mark.parametrize("override, key", [
    ("colour=red", "colour"),
    ("segmenter.colour=red", "segmenter.colour"),
    ("inpaint.stepz=3", "inpaint.stepz"),
    ("server.tls.cert=x", "server.tls"),
])
def test_unknown_override_key_names_the_key(override: str, key: str) -> None:
    message = config_error(None, [override])
    assert f"'{key}'" in message and "unknown" in message


def test_unknown_key_in_the_file_names_the_nested_key(tmp_path: Path) -> None:
    message = config_error(write(tmp_path, "inpaint:\n  steps: 3\n  sampler: euler\n"))
    assert "'inpaint.sampler'" in message
    message = config_error(write(tmp_path, "gpu: true\n", "b.yaml"))
    assert "'gpu'" in message


@pytest.mark.parametrize("override, key", [
    # bad enums
    ("device=gpu", "device"),
    ("device=1", "device"),
    # wrong types
    ("inpaint.steps=many", "inpaint.steps"),
    ("inpaint.steps=2.5", "inpaint.steps"),
    ("inpaint.steps=true", "inpaint.steps"),
    ("inpaint.guidance=high", "inpaint.guidance"),
    ("inpaint.guidance=false", "inpaint.guidance"),
    ("auto_download=maybe", "auto_download"),
    ("auto_download=1", "auto_download"),
    ("composite.match_color=0", "composite.match_color"),
    ("server.port=http", "server.port"),
    ("inpaint.model=[a, b]", "inpaint.model"),
    ("inpaint.model={a: 1}", "inpaint.model"),
    ("segmenter.model=null", "segmenter.model"),
    # a section given a plain value
    ("segmenter=vit_b", "segmenter"),
    ("inpaint=3", "inpaint"),
    # out of range
    ("inpaint.steps=0", "inpaint.steps"),
    ("inpaint.steps=-4", "inpaint.steps"),
    ("inpaint.num_images=0", "inpaint.num_images"),
    ("inpaint.strength=0", "inpaint.strength"),
    ("inpaint.strength=1.5", "inpaint.strength"),
    ("erase.strength=-0.1", "erase.strength"),
    ("inpaint.guidance=-1", "inpaint.guidance"),
    ("inpaint.memory_budget_gb=0", "inpaint.memory_budget_gb"),
    ("composite.grow=-1", "composite.grow"),
    ("composite.feather=-8", "composite.feather"),
    ("composite.context=-0.5", "composite.context"),
    ("max_image_pixels=0", "max_image_pixels"),
    ("segmenter.embedding_cache_mb=0", "segmenter.embedding_cache_mb"),
    ("server.port=0", "server.port"),
    ("server.concurrency=0", "server.concurrency"),
    # not a number at all
    ("inpaint.guidance=.nan", "inpaint.guidance"),
    ("inpaint.memory_budget_gb=.inf", "inpaint.memory_budget_gb"),
    ("composite.context=.nan", "composite.context"),
])
def test_bad_override_value_names_the_key(override: str, key: str) -> None:
    assert f"'{key}'" in config_error(None, [override])


def test_bad_value_in_the_file_names_the_key(tmp_path: Path) -> None:
    assert "'inpaint.steps'" in config_error(write(tmp_path, "inpaint:\n  steps: ten\n"))
    assert "'device'" in config_error(write(tmp_path, "device: tpu\n", "b.yaml"))
    assert "'sam'" in config_error(write(tmp_path, "sam: [1, 2]\n", "c.yaml"))


@pytest.mark.parametrize("override", ["device", "=cpu", "", "  =1"])
def test_override_without_key_value_form_is_refused(override: str) -> None:
    assert "key=value" in config_error(None, [override])


def test_invalid_yaml_is_one_line_with_the_line_number(tmp_path: Path) -> None:
    path = write(tmp_path, "device: cpu\ninpaint:\n  steps: [1, 2\n  guidance: 3\n")
    message = config_error(path)
    assert "not valid YAML" in message and str(path) in message and "line" in message


def test_missing_config_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    message = config_error(missing)
    assert "not found" in message and str(missing) in message


def test_config_path_that_is_a_folder_is_refused(tmp_path: Path) -> None:
    message = config_error(tmp_path)
    assert str(tmp_path) in message


@pytest.mark.parametrize("text", ["- device\n- cpu\n", "just a string\n", "42\n"])
def test_config_file_must_hold_a_mapping(tmp_path: Path, text: str) -> None:
    assert "mapping" in config_error(write(tmp_path, text))


def test_config_file_that_is_not_text_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "binary.yaml"
    path.write_bytes(b"\xff\xfe\x00\x81garbage")
    config_error(path)


def test_override_into_a_value_that_is_not_a_section(tmp_path: Path) -> None:
    path = write(tmp_path, "device: cpu\n")
    assert "'device'" in config_error(path, ["device.index=0"])

"""`python -m editor`: segment, edit, batch, models, download, bench and info from the command line.

Every failure a person can fix ends in one line on stderr and a non-zero exit status.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import NoReturn

from editor.core.config import Config, load_config
from editor.core.errors import EditorError
from editor.models.base import fetch_command
from editor.modes import MODES

DEFAULT_CONFIG = "config.yaml"


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # argparse prints usage over several lines
        self.exit(2, f"error: {message} (see --help)\n")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = load_config(config_path(args.config), args.set)
        return args.run(args, config)
    except EditorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug: still one line, the traceback only when asked for
        if os.environ.get("EDITOR_DEBUG"):
            raise
        print(f"error: unexpected {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} "
              "(set EDITOR_DEBUG=1 for details)", file=sys.stderr)
        return 1


def quiet_libraries() -> None:
    """Keep the model libraries' loading bars and info logs out of the person's terminal.

    Their warnings and errors still show; the editor's own progress bar stays.
    """
    import warnings

    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    warnings.filterwarnings("ignore", category=FutureWarning)
    for library in (diffusers_logging, transformers_logging):
        library.set_verbosity_error()
        library.disable_progress_bar()


def _parser() -> argparse.ArgumentParser:
    common = OneLineParser(add_help=False)
    common.add_argument("--config", help=f"settings file (default: {DEFAULT_CONFIG} when present)")
    common.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a setting, e.g. --set device=cpu (repeatable)")
    parser = OneLineParser(prog="python -m editor", description="Local AI photo editor", parents=[common])
    commands = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    segment = commands.add_parser("segment", parents=[common], help="write the mask of a clicked or named object")
    segment.add_argument("image")
    segment.add_argument("-o", "--output", required=True, help="mask PNG to write")
    _add_prompt_flags(segment)
    segment.set_defaults(run=_segment)

    edit = commands.add_parser("edit", parents=[common], help="fill, erase, replace the background, extend the canvas, upscale or cut out")
    edit.add_argument("image")
    edit.add_argument("-o", "--output", required=True,
                      help="file to write: .png, .jpg or .tif (else export.format), with the photo's colour profile "
                           "and metadata (variations get _2, _3, ...)")
    edit.add_argument("--mode", required=True, choices=MODES)
    edit.add_argument("--mask", help="mask PNG (255 = selected); instead of text, point and box prompts")
    _add_prompt_flags(edit)
    _add_edit_flags(edit)
    edit.set_defaults(run=_edit)

    batch = commands.add_parser("batch", parents=[common], help="one edit over many photos, the models loaded once")
    batch.add_argument("inputs", nargs="+", metavar="INPUT", help="photos, or folders of photos (not recursive)")
    batch.add_argument("-o", "--output", required=True, metavar="OUTDIR",
                       help="folder for the results: OUTDIR/<photo's name>.png (variations get _2, _3, ...)")
    batch.add_argument("--mode", required=True, choices=MODES)
    batch.add_argument("--mask-dir", metavar="DIR",
                       help="a mask per photo, named like it (any image type; 255 = selected); "
                            "instead of text, point and box prompts")
    _add_prompt_flags(batch)
    _add_edit_flags(batch)
    batch.add_argument("--overwrite", action="store_true", help="redo the photos whose output exists (skipped else)")
    batch.set_defaults(run=_batch)

    models = commands.add_parser("models", parents=[common], help="list every model, and whether it is here")
    models.set_defaults(run=_models)

    download = commands.add_parser("download", parents=[common], help="fetch (and verify) model weights")
    download.add_argument("what", nargs="?", default="all", metavar="NAME|KIND",
                          help="a model name (`python -m editor models`), a kind (segmenter, eraser, inpainter, "
                               "detector, upscaler: its configured or default model), or all (default)")
    download.set_defaults(run=_download)

    bench = commands.add_parser("bench", parents=[common], help="measure speed and memory (random weights)")
    bench.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when there is a GPU")
    bench.add_argument("--only", action="append",
                       choices=["sam", "inpaint", "crop", "app", "session", "segment", "erase", "upscale"],
                       help="measure only this part (repeatable)")
    bench.add_argument("--quick", action="store_true", help="smallest real settings: SAM vit_b, SD 2, 2 steps, 1 run")
    bench.add_argument("--json", metavar="FILE", help="also write the measurements as JSON")
    bench.add_argument("--sam-model", choices=["vit_b", "vit_l", "vit_h"])
    bench.add_argument("--inpaint-model", choices=["sd2", "sdxl"])
    bench.add_argument("--steps", type=int)
    bench.add_argument("--runs", type=int, help="timed runs after the warm-up (the median is reported)")
    bench.add_argument("--photo", metavar="WIDTHxHEIGHT", help="the photo for SAM and the app (default 4000x3000)")
    bench.set_defaults(run=_bench)

    load = commands.add_parser("loadtest", parents=[common],
                               help="simulated people against the app's API with Locust, on loopback only")
    load.add_argument("--users", type=int, default=3, help="simulated people (default 3)")
    load.add_argument("--spawn-rate", type=float, default=1.0, help="people started per second (default 1)")
    load.add_argument("--run-time", type=int, default=30, metavar="SECONDS", help="how long to run (default 30)")
    load.add_argument("--backend", choices=["local", "ray"],
                      help="local: the models in the app's process; ray: `python -m editor serve` first")
    load.add_argument("--url", help="a running app on this machine (loopback only) instead of starting one")
    load.add_argument("--photo", default="assets/chelsea.png", help="the photo each person edits")
    load.add_argument("--models", default="", metavar="NAME,NAME",
                      help="each person's fills take turns with these inpainting models (of inpaint.model and "
                           "inpaint.models; default: the default model)")
    load.add_argument("--json", metavar="FILE", help="write {backend, replicas, users, run_time_s, requests, "
                                                     "failures, p50_ms, p95_ms, rps, endpoints} here")
    load.add_argument("--csv", metavar="PREFIX", help="keep Locust's CSV files as PREFIX_stats.csv, ...")
    load.set_defaults(run=_loadtest)

    serve = commands.add_parser("serve", parents=[common],
                                help="run the models as Ray Serve deployments for `app.py --set serving.backend=ray`")
    serve.set_defaults(run=_serve)

    info = commands.add_parser("info", parents=[common], help="show the backends that will be used")
    info.add_argument("--load", action="store_true",
                      help="also load every model now and report any that fails to load (takes as long as loading)")
    info.set_defaults(run=_info)
    return parser


def _add_prompt_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--point", action="append", default=[], metavar="X,Y", help="object point (repeatable)")
    parser.add_argument("--neg-point", action="append", default=[], metavar="X,Y", help="not-the-object point")
    parser.add_argument("--box", metavar="X1,Y1,X2,Y2", help="box around the object")
    parser.add_argument("--text", metavar="QUERY",
                        help="select every instance of what this names, e.g. 'dog' or 'person, bicycle'; "
                             "points inside a detected box refine that instance")


def _add_edit_flags(parser: argparse.ArgumentParser) -> None:
    """What `edit` and `batch` share after the selection: the mode's options."""
    parser.add_argument("--invert", action="store_true", help="invert the selection first")
    parser.add_argument("--prompt", default="",
                        help="what to paint (fill), the new background, or what the new border shows (outpaint; "
                             "default: a seamless continuation of the scene)")
    parser.add_argument("--negative-prompt")
    parser.add_argument("--steps", type=int)
    parser.add_argument("--guidance", type=float)
    parser.add_argument("--strength", type=float)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--num-images", type=int, help="number of variations")
    parser.add_argument("--generative", action="store_true",
                        help="erase with the inpainting model instead of the eraser (LaMa or OpenCV)")
    parser.add_argument("--model", default="", metavar="NAME",
                        help="the inpainting model, one of inpaint.model (the default) and inpaint.models")
    parser.add_argument("--extend", metavar="LEFT,TOP,RIGHT,BOTTOM",
                        help="outpaint: pixels to add on each side (outpaint and upscale take no selection)")
    parser.add_argument("--aspect", metavar="W:H",
                        help="outpaint: grow the width or the height, evenly on both sides, to this aspect "
                             "(16:9, 1:1, 9:16, any W:H)")
    parser.add_argument("--scale", type=int, choices=[2, 4],
                        help="upscale: enlarge the whole photo 2 or 4 times (no selection, no prompt)")


def config_path(given: str | None) -> str | None:
    if given is not None:
        return given
    return DEFAULT_CONFIG if Path(DEFAULT_CONFIG).is_file() else None


def _segment(args: argparse.Namespace, config: Config) -> int:
    from editor.build import build_engine
    from editor.core.photo_io import load_image, save_png
    from editor.modes import prompts_from, select

    quiet_libraries()
    if prompts_from(args).is_empty and args.text is None:
        raise EditorError("give --text QUERY, at least one --point, or a --box")
    image = load_image(args.image, config.max_image_pixels)
    engine = build_engine(config)
    mask = select(engine, image, args, print)
    save_png(mask, args.output)
    print(f"wrote {args.output} ({mask.shape[1]}x{mask.shape[0]}, {int((mask > 0).sum())} pixels selected, "
          f"{engine.backends.segmenter})")
    return 0


def _edit(args: argparse.Namespace, config: Config) -> int:
    from editor.build import build_engine
    from editor.core.photo_io import load_photo
    from editor.modes import PROGRESS_UNITS, apply_mode, check_flags, selection, write

    quiet_libraries()
    check_flags(args, "--mask", args.mask is not None)
    image, info = load_photo(args.image, config.max_image_pixels)
    engine = build_engine(config)
    mask = selection(engine, image, args, Path(args.mask) if args.mask else None, config.max_image_pixels, print)
    with _ProgressBar(*PROGRESS_UNITS.get(args.mode, ("generating", "step"))) as progress:
        result = apply_mode(engine, image, mask, args, progress)
    for path in write(result, Path(args.output), info, config.export):
        print(f"wrote {path} ({result.summary})")
    return 0


def _batch(args: argparse.Namespace, config: Config) -> int:
    from editor.batch import run

    quiet_libraries()
    return run(args, config)


class _ProgressBar:
    """A tqdm bar fed by the engine's per-step callback."""

    def __init__(self, desc: str = "generating", unit: str = "step") -> None:
        self.desc, self.unit = desc, unit

    def __enter__(self) -> _ProgressBar:
        self._bar = None
        return self

    def __call__(self, done: int, total: int) -> None:
        from tqdm import tqdm

        if self._bar is None:
            self._bar = tqdm(total=total, desc=self.desc, unit=self.unit, file=sys.stderr)
        self._bar.update(done - self._bar.n)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.close()


def _models(args: argparse.Namespace, config: Config) -> int:
    """Every model the editor knows: kind, size, licence, whether it is here, how to fetch it."""
    from editor.models import registry, weights

    rows = [("NAME", "KIND", "SIZE", "LICENCE", "HERE", "FETCH WITH")]
    for entry in registry.entries():
        here = "built in" if entry.builtin else "yes" if weights.local_path(entry, Path(config.models_dir)) else "no"
        size = "-" if entry.builtin else f"{entry.size_mb} MB"
        rows.append((entry.name, entry.kind, size, entry.licence, here,
                     "-" if entry.builtin else fetch_command(entry.name)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[-1])
    return 0


def _download(args: argparse.Namespace, config: Config) -> int:
    """Fetch a model by name, or a kind's model; `all` fetches each kind's."""
    from editor.build import PLANNED_KINDS, download_target, resolve_device
    from editor.models import weights

    device = resolve_device(config.device)
    targets = [download_target(kind, config, device) for kind in PLANNED_KINDS] if args.what == "all" else \
        [download_target(args.what, config, device)]
    for entry in targets:
        path = weights.fetch(entry, Path(config.models_dir))
        check = "sha256 verified" if entry.source and entry.source.sha256 else \
            "md5 verified" if entry.source and entry.source.md5 else "verified by huggingface_hub"
        print(f"{entry.kind} {entry.name}: {path} ({check})")
    return 0


def _bench(args: argparse.Namespace, config: Config) -> int:
    from editor.build import resolve_device
    from benchmarks.bench import BenchSettings, run

    quiet_libraries()
    os.environ["HF_HUB_OFFLINE"] = "1"  # a benchmark never downloads: real weights only when already here
    device = resolve_device(args.device or "auto")
    if args.steps is not None and args.steps < 1 or args.runs is not None and args.runs < 1:
        raise EditorError("--steps and --runs must be at least 1")
    settings = BenchSettings.for_run(device, args.only, args.quick, sam_model=args.sam_model,
                                     inpaint_model=args.inpaint_model, steps=args.steps, runs=args.runs,
                                     photo=_photo_size(args.photo), models_dir=config.models_dir)
    run(settings, Path(args.json) if args.json else None)
    return 0


def _photo_size(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    width, sep, height = text.lower().partition("x")
    if not sep or not width.isdigit() or not height.isdigit() or int(width) < 64 or int(height) < 64:
        raise EditorError(f"--photo expects WIDTHxHEIGHT of at least 64x64, got {text!r}")
    return int(width), int(height)


def _loadtest(args: argparse.Namespace, config: Config) -> int:
    from editor.loadtest.run import Plan, run

    serving = getattr(config, "serving", None)
    backend = args.backend or getattr(serving, "backend", "local")
    plan = Plan(users=args.users, spawn_rate=args.spawn_rate, run_time_s=args.run_time, backend=backend,
                config=args.config, overrides=list(args.set), url=args.url, photo=Path(args.photo),
                models=tuple(name.strip() for name in args.models.split(",") if name.strip()))
    report = run(plan, config, Path(args.json) if args.json else None, args.csv)
    print(f"{report['backend']}: {report['users']} users, {report['run_time_s']} s: {report['requests']} requests, "
          f"{report['failures']} failures, p50 {report['p50_ms']:.0f} ms, p95 {report['p95_ms']:.0f} ms, "
          f"{report['rps']:.2f} requests/s")
    for name, row in report["endpoints"].items():
        print(f"  {name}: {row['requests']} requests, {row['failures']} failures, p50 {row['p50_ms']:.0f} ms, "
              f"p95 {row['p95_ms']:.0f} ms")
    return 1 if report["failures"] else 0


def _serve(args: argparse.Namespace, config: Config) -> int:
    """Until Ctrl+C (or SIGTERM): the deployments of `serving.*`, on a local Ray or `serving.ray_address`."""
    import signal

    from editor.serving.cluster import serve_forever

    quiet_libraries()
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # a service manager's stop ends it like Ctrl+C
    return serve_forever(config)


def _info(args: argparse.Namespace, config: Config) -> int:
    """What the settings name, instantly; with --load, what really loads (and why a model did not)."""
    from editor.build import build_engine, check_concurrency, describe, plan_backends

    plan = plan_backends(config)
    if args.load:
        quiet_libraries()
        engine = build_engine(config)
        engine.warm_up(detector=True, upscaler=True)
        backends = engine.status()
    else:
        backends = describe(plan, config)
    print(f"device: {backends.device}")
    print(f"segmenter: {backends.segmenter}")
    print(f"eraser: {backends.eraser}")
    print(f"inpainter: {backends.inpainter}")
    print(f"detector: {backends.detector}")
    print(f"upscaler: {backends.upscaler}")
    try:
        check_concurrency(config, plan)
        print(f"concurrency: {config.server.concurrency} model call{'s' if config.server.concurrency > 1 else ''} "
              "at once (server.concurrency)")
    except EditorError as exc:
        print(f"concurrency: refused: {exc}")
    if backends.hint:
        print(f"missing: {backends.hint}")
    for error in backends.errors:
        print(f"failed: {error}")
    if not args.load:
        print("(--load loads each model now and reports any that fails)")
    return 0

"""`python app.py`: serve the photo editor on http://127.0.0.1:7860.

Reads config.yaml (or --config FILE) plus repeatable --set key=value overrides, like
`python -m editor`. A public share link only with --share (or server.share: true); a login
only when EDITOR_USERNAME and EDITOR_PASSWORD are set in the environment.
"""
from __future__ import annotations

import argparse
import errno
import json
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

from editor.cli import DEFAULT_CONFIG, OneLineParser, config_path, quiet_libraries
from editor.core.config import Config, load_config
from editor.core.errors import BackendUnreachable, ConfigError, EditorError

if TYPE_CHECKING:
    from editor.engine.ops import Engine
    from editor.models.weights import Downloads

AUTH_ENV = ("EDITOR_USERNAME", "EDITOR_PASSWORD")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = OneLineParser(prog="python app.py", description="Local AI photo editor in the browser")
    parser.add_argument("--config", help=f"settings file (default: {DEFAULT_CONFIG} when present)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a setting, e.g. --set inpaint.model=DIR (repeatable)")
    parser.add_argument("--host", help="address to listen on (default: server.host, 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to listen on (default: server.port, 7860)")
    parser.add_argument("--share", action="store_true", help="also open a public gradio.live link")
    return parser.parse_args(argv)


def settings(args: argparse.Namespace) -> Config:
    """The config file, then --set, then the --host/--port/--share flags."""
    overrides = list(args.set)
    if args.host is not None:  # quoted: YAML would read "::" as a mapping
        overrides.append(f"server.host={json.dumps(args.host)}")
    if args.port is not None:
        overrides.append(f"server.port={args.port}")
    if args.share:
        overrides.append("server.share=true")
    return load_config(config_path(args.config), overrides)


def auth_from_env(environ: dict[str, str] | os._Environ = os.environ) -> tuple[str, str] | None:
    username, password = (environ.get(name, "") for name in AUTH_ENV)
    if not username and not password:
        return None
    if not username or not password:
        raise ConfigError(f"set both {AUTH_ENV[0]} and {AUTH_ENV[1]} for a login, or neither")
    return username, password


def check_address(host: str, port: int) -> None:
    """Can this machine listen on host:port? If not, one line naming the setting to change
    (Gradio's own message for both a foreign address and a taken port is "Cannot find empty port")."""
    where = f"cannot serve on {host}:{port}"
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError):
        raise ConfigError(f"{where}: server.host {host!r} is not a known host name or address") from None
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server will
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ConfigError(f"{where}: server.port {port} is in use; choose another with --port") from None
            if exc.errno == errno.EACCES:
                raise ConfigError(f"{where}: server.port {port} needs administrator rights; use one above 1023"
                                  ) from None
            raise ConfigError(f"{where}: server.host {host} is not an address of this machine") from None


def ask_at_terminal(question: str) -> bool:
    """A yes from the person at the terminal; no when nobody is there to answer (a service, a pipe)."""
    if not sys.stdin.isatty():
        return False
    try:
        return input(question).strip().lower() in ("y", "yes")
    except EOFError:
        return False


def engine_for(config: Config, downloads: Downloads, ask: Callable[[str], bool] = ask_at_terminal
               ) -> tuple[Engine, Config]:
    """The engine the settings ask for, and the settings it runs under: when the Ray cluster cannot be
    reached, the local backend instead if `serving.on_unreachable` says so or the person agrees."""
    from editor.build import build_engine, check_concurrency, plan_backends

    try:
        if config.serving.backend == "local":  # (the deployments' replicas each run one model)
            check_concurrency(config, plan_backends(config))  # before anything loads or the page is built
        return build_engine(config, downloads=downloads), config
    except BackendUnreachable as exc:
        choice = config.serving.on_unreachable
        if choice == "stop" or (choice == "ask" and not ask(f"{exc}.\nRun the models in this app instead? [y/N] ")):
            raise
        print(f"warning: {exc.problem}; the models run in this app instead (serving.backend=local)", file=sys.stderr)
        return engine_for(replace(config, serving=replace(config.serving, backend="local")), downloads, ask)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config = settings(args)
        auth = auth_from_env()
        check_address(config.server.host, config.server.port)
        os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # a local tool: nothing phones home
        quiet_libraries()
        from editor.models.weights import Downloads

        downloads = Downloads()  # missing models are fetched behind the page; its header follows them
        engine, config = engine_for(config, downloads)
    except EditorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    from editor.ui.page import build_ui, launch_options

    demo = build_ui(engine, config, downloads=downloads)
    server = config.server
    print(f"backends: select with {engine.backends.segmenter}; erase with {engine.backends.eraser}; "
          f"fill with {engine.backends.inpainter}; select by name with {engine.backends.detector}", file=sys.stderr)
    if engine.backends.hint:
        print(f"missing models: {engine.backends.hint}", file=sys.stderr)
    try:
        demo.queue(default_concurrency_limit=server.concurrency).launch(
            server_name=server.host,
            server_port=server.port,
            share=server.share,
            auth=auth,
            max_file_size=f"{server.max_upload_mb}mb",
            show_error=False,
            prevent_thread_lock=True,
            quiet=True,  # Gradio's own lines suggest editing launch(); ours name the flags
            **launch_options(),
        )
    except OSError as exc:  # the port is taken, or the address is not this machine's
        print(f"error: cannot serve on {server.host}:{server.port}: {str(exc).split('. ')[0]}", file=sys.stderr)
        return 1
    print(f"photo editor: {demo.local_url}", file=sys.stderr)
    if demo.share_url:
        print(f"public link: {demo.share_url}", file=sys.stderr)
    elif not server.share:
        print("(--share makes a public link; --host and --port choose where to listen)", file=sys.stderr)
    # The page is up; the models load (and missing ones download) behind it, so it serves at once.
    threading.Thread(target=warm_up, args=(engine,), name="warm-up", daemon=True).start()
    try:
        demo.block_thread()
    finally:
        demo.close()
    return 0


def _stop(signum: int, frame: object) -> None:
    raise SystemExit(0)  # unwinds main(): the server closes and the exit handlers run


def warm_up(engine: Engine) -> None:
    """Load the models in the background. A model that fails to load is logged once, in one line,
    when it fails, and stays in `engine.status().errors` with its fallback; nothing here raises."""
    try:
        engine.warm_up()
    except Exception as exc:  # a bug, not a model: still one line, and the page keeps serving
        from editor.models.loading import one_line

        print(f"error: warming up failed: {one_line(exc)}", file=sys.stderr)


if __name__ == "__main__":
    # SIGTERM (a service manager, `kill`) ends the app like Ctrl+C, at any moment: the server
    # closes and the exit handlers run, with no traceback.
    signal.signal(signal.SIGTERM, _stop)
    sys.exit(main())

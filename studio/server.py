"""Serving the studio: ``segstudio studio`` and ``python launch.py`` end here."""

from __future__ import annotations

import argparse
import os
import sys


def serve_from_args(args: argparse.Namespace) -> int:
    """Prepare the workspace, build the app and serve it until interrupted.

    Args:
        args: parsed options of ``segstudio studio`` (see ``core.cli.add_studio_arguments``).
    """
    from core.cli import apply_environment, parse_auth
    from core.workspace import prepare_workspace

    apply_environment(args)
    workspace = prepare_workspace(args.data, args.workspace, reset=args.reset_workspace)
    # Gradio keeps the files it serves (rendered previews) in its temp dir: put that inside the
    # workspace so that the server only ever serves files from the dataset and workspace folders.
    os.environ.setdefault("GRADIO_TEMP_DIR", str(workspace.output_root / ".gradio"))
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    # CPU-bound events (refining boxes, previews) may run side by side; GPU events set their own limit
    # of 1. Set through the environment, read when the Blocks' queue is made: calling demo.queue()
    # instead would build the whole FastAPI app an extra time at start-up (about 0.25 s here).
    os.environ.setdefault("GRADIO_DEFAULT_CONCURRENCY_LIMIT", "4")

    from studio.app import StudioConfig, build_app, launch_kwargs

    config = StudioConfig(workspace, host=args.host, port=args.port, share=args.share, auth=parse_auth(args.auth))
    if workspace.is_copy:
        print(f"SegStudio: the bundled samples are opened as a working copy at {workspace.dataset_root}", flush=True)
    else:
        print(
            f"SegStudio: dataset {workspace.dataset_root} (previous versions of edited files go to .segstudio/history/)",
            flush=True,
        )
    print(f"SegStudio: new outputs go to {workspace.output_root}", flush=True)
    demo = build_app(config)
    demo.launch(**launch_kwargs(config))
    return 0


if __name__ == "__main__":
    from core.cli import build_parser

    sys.exit(serve_from_args(build_parser().parse_args(["studio", *sys.argv[1:]])))

"""Open SegStudio in the browser: the same as ``segstudio studio`` (run ``python launch.py --help``)."""

import sys

from core.cli import build_parser, run
from studio.server import serve_from_args

if __name__ == "__main__":
    args = build_parser().parse_args(["studio", *sys.argv[1:]])
    sys.exit(run(serve_from_args, args))

"""`llmdeploy bake --stack X [--runtime nspawn|qemu]`: bake a local stack's image (bake/local.py) that `llmdeploy
local up` then boots by itself. Exit codes: 0 baked (or already baked), 1 failed (nothing is kept), 2 bad input."""
from __future__ import annotations

import argparse
import signal
from typing import Any

from ..errors import EXIT_OK
from ..projectdir import find_project_dir, stack_arg

EPILOG = """\
examples:
  sudo llmdeploy bake --stack local --runtime nspawn   # then: sudo llmdeploy local up --runtime nspawn
  llmdeploy bake --stack local --runtime qemu
what is baked, what is scrubbed and how a baked image gets its security updates: docs/baking.md
"""


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # SIGTERM: clean up as for Ctrl-C


def cmd_bake(args: argparse.Namespace) -> int:
    from ..local.lifecycle import UpOptions
    from .local import bake

    signal.signal(signal.SIGTERM, _interrupt)
    opts = UpOptions(stack=args.stack, project_dir=find_project_dir(args.project_dir), runtime=args.runtime,
                     model_file=args.model_file, torch_wheels=list(args.torch_wheels or []))
    bake(opts, keep_models=not args.no_models)
    return EXIT_OK


def register(subparsers: Any) -> argparse.ArgumentParser:
    from ..local import RUNTIMES
    from ..local.choice import AUTO

    p = subparsers.add_parser("bake", help="bake a local stack's image once: `local up` then boots from it",
                              description=__doc__, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(command_name="bake", func=cmd_bake)
    p.add_argument("--stack", type=stack_arg, required=True, help="a stack with target local (e.g. local)")
    p.add_argument("--project-dir", help="folder holding Pulumi.yaml (default: the nearest at or above here)")
    p.add_argument("--runtime", choices=(AUTO, *RUNTIMES), default=AUTO,
                   help="the runtime whose image to bake, as `local up --runtime` (default: the one `local up` "
                        "would choose here)")
    p.add_argument("--model-file", metavar="PATH", help="as `local up --model-file`: the GGUF baked in")
    p.add_argument("--torch-wheels", action="append", metavar="DIR", help="as `local up --torch-wheels`")
    p.add_argument("--no-models", action="store_true",
                   help="leave the engine's weights out of the image (each boot downloads them again)")
    return p

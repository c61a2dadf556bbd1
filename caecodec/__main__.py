"""``python -m caecodec encode|decode|info ...``: the same as the ``cae`` command."""
import sys

from .cli import main

sys.exit(main(prog="python -m caecodec"))

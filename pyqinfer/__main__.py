"""``python -m pyqinfer``: the command line (see :mod:`pyqinfer.cli`)."""
import sys

from .cli import main

sys.exit(main())

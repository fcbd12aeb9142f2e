"""``python -m jobledger.cli``: the same as the ``jobledger`` command."""

from . import main

main()

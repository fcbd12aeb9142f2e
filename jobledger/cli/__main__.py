"""``python -m jobledger.cli``: the same as the ``jobledger`` command."""

from . import main

if __name__ == "__main__":  # not when imported, e.g. by a walk over the package's modules
    main()

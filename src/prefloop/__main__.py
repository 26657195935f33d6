"""``python -m prefloop``: the same command line as ``prefloop``."""

from prefloop.cli import main

if __name__ == "__main__":
    main()

"""``python -m inrdiag`` (and ``torchrun ... -m inrdiag``). Guarded so that worker processes started
with the spawn method (``--jobs N``), which import the main module, do not run the CLI again."""

from .cli import console_main

if __name__ == "__main__":
    console_main()

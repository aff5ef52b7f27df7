"""The package's exception types for bad input; each message names the problem and the fix."""

import signal


class ExportError(Exception):
    """Bad input (checkpoint, config, options, output folder); the message says what to do."""


class ExportInterrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT), SIGTERM or SIGHUP during an export. `complete`: the signal came while the finished
    export was being moved into place, which was let finish (so --out holds the new export);
    otherwise nothing was written (--out is as it was)."""

    def __init__(self, signum: int = signal.SIGINT, complete: bool = False):
        super().__init__(signum, complete)
        self.signum = signum
        self.complete = complete


class ReferenceError(ValueError):
    """Bad input to the PyTorch reference (spec, checkpoint, data or trace); the message names the fix."""

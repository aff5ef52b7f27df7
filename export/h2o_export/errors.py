"""The package's exception types for bad input; each message names the problem and the fix."""


class ExportError(Exception):
    """Bad input (checkpoint, config, options, output folder); the message says what to do."""


class ReferenceError(ValueError):
    """Bad input to the PyTorch reference (spec, checkpoint, data or trace); the message names the fix."""

"""The one exception type the exporter raises for bad input; its message names the fix."""


class ExportError(Exception):
    """Bad input (checkpoint, config, options, output folder); the message says what to do."""

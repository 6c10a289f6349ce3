"""The command-line interface: one module per command, each thin over the Python API."""

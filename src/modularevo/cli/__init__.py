"""The ``modularevo`` command line: thin shells over the public Python API."""

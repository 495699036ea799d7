"""The ``layerkit`` command line: a thin typer shell over the library (installed as ``layerkit.cli``)."""

"""The application layer: the ``jaxfactor`` command (:mod:`.cli`), the pipeline
from a generator to saved directions (:mod:`.pipeline`) and the offline demo
(:mod:`.demo`).

The only part of the package that imports :mod:`bridges` (the PyTorch side):
the engine (kernels, estimators, metrics) never does, and ``bridges`` never
imports this layer. ``tests/test_layers.py`` enforces it with import-linter.
"""

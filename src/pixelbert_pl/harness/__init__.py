"""The demo harness, fenced off from the library: ShapesWorld (`shapes`: the synthetic corpus and its generator),
DataModules over it (`datamodules`), `make demo`'s runner (`demo`) with its recipes (`configs/`, package data), and
the grounding diagnostics (`grounding`).

It builds on the library (models, data, tasks, cli); nothing in the library imports it.
"""

"""Tests of the ShapesWorld generator, one module per module of pixelbert_pl.harness.shapes."""

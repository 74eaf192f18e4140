"""Tests of the demo harness (pixelbert_pl.harness): a package, so that its module names may repeat those of
tests/."""

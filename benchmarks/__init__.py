"""Benchmarks (not timed tests): each module measures one figure and prints JSON lines; `suite` runs them all."""

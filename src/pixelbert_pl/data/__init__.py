"""Data: corpus readers in their published formats, samples, samplers and DataModules."""

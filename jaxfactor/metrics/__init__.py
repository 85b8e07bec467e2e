"""Metrics that judge edit directions: Fréchet distance and edit FID, walk scores, Amari distance."""

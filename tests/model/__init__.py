"""A model of the cancel guarantee's fence-and-watermark argument (docs/model-checking.md)."""

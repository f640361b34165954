"""`watchkeeper cli`: the full-screen terminal UI (Textual), nine views on keys 1-9.

Imported only by the `cli` command: `run` and `serve` never load Textual.
"""

"""The bottom layer: configuration helpers, file I/O, the package version and the fusion formula.

Everything here needs only the standard library and numpy, so every other layer may use it.
"""

"""Merging: pure per-tensor merge methods (registered) and the streaming executor."""

from modularevo.merging.spec import MERGE_METHODS, MergeMethod, Param, register_method

__all__ = ["MERGE_METHODS", "MergeMethod", "Param", "register_method"]

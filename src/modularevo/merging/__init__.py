"""Merging: pure per-tensor merge methods (registered) and the streaming executor."""

# Importing ``methods`` registers every merge method in MERGE_METHODS.
from modularevo.merging import methods
from modularevo.merging.spec import MERGE_METHODS, MergeMethod, Param, register_method

__all__ = ["MERGE_METHODS", "MergeMethod", "Param", "methods", "register_method"]

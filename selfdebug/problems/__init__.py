"""Benchmarks read into one ``Problem`` schema."""

from selfdebug.problems.formats import MBPP_SPLITS, FormatError, detect
from selfdebug.problems.load import load_problems, read_records

__all__ = ["MBPP_SPLITS", "FormatError", "detect", "load_problems", "read_records"]

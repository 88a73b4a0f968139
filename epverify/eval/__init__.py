"""Measuring circuits: the one evaluator, comparisons with a truth and between circuits, curves, extraction checks."""

from .evaluator import Evaluator, evaluate

__all__ = ["Evaluator", "evaluate"]

from .main import build_parser, main, reference_markdown

__all__ = ["build_parser", "main", "reference_markdown"]

"""longrecipe: cheap context-window extension for LLMs (LongRecipe, Hu et al., ACL 2025)."""

__version__ = "0.1.0"

"""Thin ``@hydra.main`` entry points; the logic lives in the library."""

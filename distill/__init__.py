"""Command line and end-to-end demo of the distillation platform."""

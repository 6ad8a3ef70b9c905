"""The ``hil`` stage of ``sindyrl run`` (the pipeline imports ``stage`` from here)."""

from .hil import stage

__all__ = ["stage"]

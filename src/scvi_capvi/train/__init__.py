"""Training plans."""

from ._trainingplans import CapVITrainingPlan

__all__ = ["CapVITrainingPlan"]

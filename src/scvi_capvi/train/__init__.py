"""Training plans."""

from ._runner import SafeTrainRunner
from ._trainingplans import CapVITrainingPlan, FiniteLossTrainingPlan

__all__ = ["CapVITrainingPlan", "FiniteLossTrainingPlan", "SafeTrainRunner"]

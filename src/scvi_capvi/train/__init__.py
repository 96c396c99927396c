"""Training plan and Lightning callbacks."""

from ._callbacks import FiniteLossGuard, KeepUsableOnFailure, RestoreBestEpoch
from ._trainingplans import CapVITrainingPlan

__all__ = ["CapVITrainingPlan", "FiniteLossGuard", "KeepUsableOnFailure", "RestoreBestEpoch"]

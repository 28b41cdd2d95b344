"""Feature transforms and the FeaturePipeline shared by training and serving."""

from keel.features.custom import feature
from keel.features.pipeline import FeaturePipeline

__all__ = ["FeaturePipeline", "feature"]

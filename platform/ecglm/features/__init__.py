"""ECG grounding features: multi-lead delineation, GEM's 14 per-beat x per-lead sequences,
record summaries and prompt text.

Typical use::

    from ecglm.features import grounding_features, summarize, summary_text
    feats = grounding_features(signal, fs)        # signal (12, T) mV, fs Hz
    text = summary_text(summarize(feats))
"""

from ecglm.features.delineation import Delineation, DelineationParams, delineate
from ecglm.features.grounding import (
    FEATURE_NAMES,
    FEATURE_UNITS,
    ST_FORMS,
    GroundingFeatures,
    features_from_delineation,
    grounding_features,
    st_form_code,
)
from ecglm.features.summary import summarize, summary_text
from ecglm.features.validation import SignalError, check_signal

__all__ = [
    "FEATURE_NAMES",
    "FEATURE_UNITS",
    "ST_FORMS",
    "Delineation",
    "DelineationParams",
    "GroundingFeatures",
    "SignalError",
    "check_signal",
    "delineate",
    "features_from_delineation",
    "grounding_features",
    "st_form_code",
    "summarize",
    "summary_text",
]

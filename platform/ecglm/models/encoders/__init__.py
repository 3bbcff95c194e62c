"""ECG encoders: ``cmelt`` (Q-HEART), ``temporal_conv`` (MEIT), ``ts_transformer`` and ``dual``
(GEM), ``image`` (vision tower over the rendered ECG). Build one with :func:`build_encoder`."""

from ecglm.models.encoders.base import (
    N_LEADS,
    CheckpointError,
    ECGEncoder,
    EncoderOutput,
    ModelInputError,
    load_encoder_checkpoint,
    mask_leads,
    time_series_part,
)
from ecglm.models.encoders.cmelt import CMELTEncoder
from ecglm.models.encoders.dual import DualEncoder
from ecglm.models.encoders.image import ImageEncoder, tiny_tower_dir, write_tiny_tower
from ecglm.models.encoders.registry import ENCODERS, EncoderSpec, build_encoder, encoder_spec
from ecglm.models.encoders.temporal_conv import TemporalConvEncoder
from ecglm.models.encoders.ts_transformer import TSTransformerEncoder

__all__ = [
    "ENCODERS",
    "N_LEADS",
    "CMELTEncoder",
    "CheckpointError",
    "DualEncoder",
    "ECGEncoder",
    "EncoderSpec",
    "EncoderOutput",
    "ImageEncoder",
    "ModelInputError",
    "TSTransformerEncoder",
    "TemporalConvEncoder",
    "build_encoder",
    "encoder_spec",
    "load_encoder_checkpoint",
    "mask_leads",
    "tiny_tower_dir",
    "time_series_part",
    "write_tiny_tower",
]

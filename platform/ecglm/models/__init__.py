"""ECG-language model layer: ECG encoders, mappers, LLM preparation/LoRA, fusion, prompting."""

from ecglm.models.ecg_lm import ECGLanguageModel, build_ecg_lm, position_ids_from_mask
from ecglm.models.dims import LLMDims, llm_dims
from ecglm.models.encoders import (
    CheckpointError,
    CMELTEncoder,
    DualEncoder,
    ECGEncoder,
    EncoderOutput,
    ImageEncoder,
    ModelInputError,
    TemporalConvEncoder,
    TSTransformerEncoder,
    build_encoder,
)
from ecglm.models.llm import LLMPrepareError, load_llm, load_tokenizer, prepare_llm_dir
from ecglm.models.mappers import ETMapper, GEMProjector, HeadTile, TokenMLPMapper, build_mapper
from ecglm.models.prompting import (
    IGNORE_INDEX,
    PromptError,
    build_prompt,
    collate,
    encode_prompt,
    encode_train_example,
    format_answer,
    parse_answer,
    prompt_for_row,
    render_prompt,
)

__all__ = [
    "IGNORE_INDEX",
    "CMELTEncoder",
    "CheckpointError",
    "DualEncoder",
    "ECGEncoder",
    "ECGLanguageModel",
    "ETMapper",
    "EncoderOutput",
    "GEMProjector",
    "HeadTile",
    "ImageEncoder",
    "LLMDims",
    "LLMPrepareError",
    "ModelInputError",
    "PromptError",
    "TSTransformerEncoder",
    "TemporalConvEncoder",
    "TokenMLPMapper",
    "build_ecg_lm",
    "build_encoder",
    "build_mapper",
    "build_prompt",
    "collate",
    "encode_prompt",
    "encode_train_example",
    "format_answer",
    "llm_dims",
    "load_llm",
    "load_tokenizer",
    "parse_answer",
    "position_ids_from_mask",
    "prepare_llm_dir",
    "prompt_for_row",
    "render_prompt",
]

"""ECG-language model layer: ECG encoder, ET-Mapper, LLM preparation/LoRA, fusion, prompting."""

from ecglm.models.ecg_lm import ECGLanguageModel, build_ecg_lm, position_ids_from_mask
from ecglm.models.encoders import (
    CheckpointError,
    CMELTEncoder,
    EncoderOutput,
    ModelInputError,
    build_encoder,
)
from ecglm.models.llm import LLMPrepareError, load_llm, load_tokenizer, prepare_llm_dir
from ecglm.models.mappers import ETMapper, build_mapper
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
    "ECGLanguageModel",
    "ETMapper",
    "EncoderOutput",
    "LLMPrepareError",
    "ModelInputError",
    "PromptError",
    "build_ecg_lm",
    "build_encoder",
    "build_mapper",
    "build_prompt",
    "collate",
    "encode_prompt",
    "encode_train_example",
    "format_answer",
    "load_llm",
    "load_tokenizer",
    "parse_answer",
    "position_ids_from_mask",
    "prepare_llm_dir",
    "prompt_for_row",
    "render_prompt",
]

"""Fusion: where ECG tokens enter the LLM.

Two fusions (``fusion.name``), one class each, chosen once by :func:`build_fusion`:

* ``input_prefix`` (:class:`InputPrefixFusion`): ECG vectors ``(B, P, d_llm)`` join the text
  embeddings, before the text or spliced in at the placeholder (helpers in :mod:`.splice`);
* ``kv_prefix`` (:class:`KVPrefixFusion`, MEIT): per-layer key/value prefix (helpers in
  :mod:`.kv_cache`).
"""

from ecglm.models.fusion.base import Fusion, check_streaming, position_ids_from_mask
from ecglm.models.fusion.input_prefix import InputPrefixFusion
from ecglm.models.fusion.kv_cache import (
    KVLayer,
    KVPrefixModules,
    PrefixKVLayer,
    PrefixOnlyCache,
    allow_checkpointing_with_prefix_cache,
    build_kv_prefix_cache,
    build_prefix_only_cache,
    greedy_with_cache,
    kv_prefix_modules,
)
from ecglm.models.fusion.kv_prefix import KVPrefixFusion
from ecglm.models.fusion.registry import FUSIONS, build_fusion
from ecglm.models.fusion.splice import (
    check_prefix_at,
    left_pad,
    left_pad_prefix_at,
    split_at_placeholder,
    splice,
    text_index,
)

__all__ = [
    "FUSIONS",
    "Fusion",
    "InputPrefixFusion",
    "KVLayer",
    "KVPrefixFusion",
    "KVPrefixModules",
    "PrefixKVLayer",
    "PrefixOnlyCache",
    "allow_checkpointing_with_prefix_cache",
    "build_fusion",
    "build_kv_prefix_cache",
    "build_prefix_only_cache",
    "check_prefix_at",
    "check_streaming",
    "greedy_with_cache",
    "kv_prefix_modules",
    "left_pad",
    "left_pad_prefix_at",
    "position_ids_from_mask",
    "split_at_placeholder",
    "splice",
    "text_index",
]

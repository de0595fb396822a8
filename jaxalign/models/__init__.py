"""Flax NNX causal language models (Llama / Qwen2 / Qwen3 families) with HF interop.

* :class:`ModelConfig` — hashable architecture config, ``from_hf_config`` / ``to_hf_config``.
* :class:`CausalLM` — the policy/reference model; params carry logical axis names.
* :func:`from_pretrained` / :func:`save_pretrained` — local HF safetensors in and out,
  sharded placement straight from the files when a mesh is given.
* :func:`sequence_logprobs` — response log-probs, the input of every preference loss.
* :func:`generate` — KV-cache sampling in one jitted ``while_loop``.
* :func:`best_of_n_generate` — best-of-N sampling with a reward model (exact BoN law).
* :class:`RewardModel`, :class:`PreferenceModel` — preference oracles on the same trunk.
* sharding helpers (:data:`DEFAULT_RULES`, :func:`state_shardings`, ...) and tokenisers.
"""

from jaxalign.models.best_of_n import BestOfN, best_of_n_generate
from jaxalign.models.config import SUPPORTED_MODEL_TYPES, ModelConfig
from jaxalign.models.heads import (
    PreferenceModel,
    RewardModel,
    bradley_terry_probability,
    last_token_index,
    preference_logit,
    preference_model_from_pretrained,
    reward_model_from_pretrained,
    rewards,
)
from jaxalign.models.hf import from_pretrained, save_pretrained
from jaxalign.models.logprobs import SequenceLogProbs, sequence_logprobs, token_logprobs
from jaxalign.models.sampling import Generation, generate, left_align
from jaxalign.models.sharding import (
    DEFAULT_RULES,
    axis_rules,
    constrain,
    logical_sharding,
    logical_to_spec,
    model_shardings,
    state_shardings,
)
from jaxalign.models.tokenizer import (
    build_tiny_tokenizer,
    chat_token_ids,
    encode_batch,
    load_tokenizer,
    pad_batch,
)
from jaxalign.models.transformer import (
    CausalLM,
    KVCache,
    Transformer,
    causal_padding_mask,
    logits,
    positions_from_mask,
)

__all__ = [
    "DEFAULT_RULES",
    "SUPPORTED_MODEL_TYPES",
    "BestOfN",
    "CausalLM",
    "Generation",
    "KVCache",
    "ModelConfig",
    "PreferenceModel",
    "RewardModel",
    "SequenceLogProbs",
    "Transformer",
    "axis_rules",
    "best_of_n_generate",
    "bradley_terry_probability",
    "build_tiny_tokenizer",
    "causal_padding_mask",
    "chat_token_ids",
    "constrain",
    "encode_batch",
    "from_pretrained",
    "generate",
    "last_token_index",
    "left_align",
    "load_tokenizer",
    "logical_sharding",
    "logical_to_spec",
    "logits",
    "model_shardings",
    "pad_batch",
    "positions_from_mask",
    "preference_logit",
    "preference_model_from_pretrained",
    "reward_model_from_pretrained",
    "rewards",
    "save_pretrained",
    "sequence_logprobs",
    "state_shardings",
    "token_logprobs",
]

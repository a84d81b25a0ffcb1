"""The built-in GenerationConfig fields: one declaration each, with group, help, check and default.

:class:`BuiltinFields` is the table -- every field of transformers 4.56 and 5.x, stored value None
("unset") -- and :class:`~genplug.config.GenerationConfig` adds the behaviour. Validation, the docs and
the CLI read the declarations back through :func:`builtin_field_specs`, so each fact lives here only.
A field's ``help`` completes the sentence "<name> is ..."; its ``fix`` says how to repair a bad value.
"""

from __future__ import annotations

import functools
from typing import Any, Optional, Tuple

import attrs

from .checks import (
    DecayPenalty, DolaLayers, Flag, Integer, ListOf, OneOf, Real, SequenceBias, Settings, StopStrings,
    StrDict, Text, TokenIdList, TokenIds, TokenSequences,
)

# Groups, in the order the docs and ``--help`` list them.
LENGTH = "length"
STRATEGY = "strategy"
CACHE = "cache"
LOGITS = "logits"
WARPERS = "warpers"
OUTPUTS = "outputs"
SPECIAL_TOKENS = "special tokens"
ASSISTED = "assisted"
PERFORMANCE = "performance"
DEPRECATED = "deprecated/routing"
GROUPS = (LENGTH, STRATEGY, CACHE, LOGITS, WARPERS, OUTPUTS, SPECIAL_TOKENS, ASSISTED, PERFORMANCE, DEPRECATED)

_NO_DEFAULT = object()


@attrs.frozen
class FieldSpec:
    """What one built-in field is: ``help`` completes "<name> is ...", ``fix`` says how to repair a bad value."""

    name: str
    group: str
    help: str
    check: Any
    fix: str = ""
    default: Any = _NO_DEFAULT

    @property
    def has_default(self) -> bool:
        """Whether unset means a concrete value (from ``GenerationConfig.default_values()``)."""
        return self.default is not _NO_DEFAULT

    @property
    def effective_default(self) -> Any:
        return self.default if self.has_default else None

    def accepts(self) -> str:
        return self.check.describe()


def builtin(group: str, help: str, check: Any, fix: str = "", default: Any = _NO_DEFAULT):
    """Declare a built-in field: stored value None ("unset"), the rest kept as attrs metadata."""
    return attrs.field(default=None, metadata={"spec": (group, help, check, fix, default)})


@functools.lru_cache(maxsize=None)
def builtin_field_specs(cls: type) -> Tuple[FieldSpec, ...]:
    """The FieldSpecs of an attrs class declared with :func:`builtin`, in declaration order."""
    return tuple(FieldSpec(a.name, *a.metadata["spec"]) for a in attrs.fields(cls) if "spec" in a.metadata)


_OFF = "use 0 to disable it"
_ONE_OFF = "use 1.0 to disable it"


@attrs.define(slots=False, init=False, eq=False, repr=False, on_setattr=attrs.setters.NO_OP)
class BuiltinFields:
    """The built-in fields, grouped as in transformers' docs; subclassed by GenerationConfig."""

    # ---- length and stopping
    max_length: Optional[int] = builtin(
        LENGTH, "the maximum total length, prompt included (max_new_tokens wins if set)",
        Integer(0), "use max_new_tokens to count new tokens only", default=20,
    )
    max_new_tokens: Optional[int] = builtin(
        LENGTH, "the maximum number of tokens to generate, prompt excluded",
        Integer(1), "use a count > 0, or leave it unset to use max_length",
    )
    min_length: Optional[int] = builtin(
        LENGTH, "the minimum total length before EOS may be generated, prompt included",
        Integer(0), _OFF, default=0,
    )
    min_new_tokens: Optional[int] = builtin(
        LENGTH, "the minimum number of new tokens before EOS may be generated",
        Integer(0), _OFF,
    )
    early_stopping: Any = builtin(
        LENGTH, "the beam-search stopping rule",
        OneOf((True, False, "never")),
        "use True (stop at num_beams finished), False (heuristic) or 'never'", default=False,
    )
    max_time: Optional[float] = builtin(
        LENGTH, "the time budget in seconds",
        Real(0.0, None, low_open=True), "use a number of seconds > 0",
    )
    stop_strings: Any = builtin(
        LENGTH, "the text that ends generation once produced (needs tokenizer=)",
        StopStrings(), "use a string or a list of non-empty strings",
    )

    # ---- strategy
    do_sample: Optional[bool] = builtin(
        STRATEGY, "whether to sample the next token instead of taking the most likely one",
        Flag(), default=False,
    )
    num_beams: Optional[int] = builtin(
        STRATEGY, "the number of beams (1 means no beam search)",
        Integer(1), "use 1 to disable beam search", default=1,
    )
    use_mtp: Optional[bool] = builtin(
        STRATEGY, "whether the model's multi-token-prediction heads draft tokens (assisted mode)",
        Flag(),
    )
    length_penalty: Optional[float] = builtin(
        STRATEGY, "the exponent of the length that divides beam scores (> 0 favours longer output)",
        Real(), "use 1.0 for plain length normalisation", default=1.0,
    )

    # ---- cache
    use_cache: Optional[bool] = builtin(
        CACHE, "whether past keys and values are kept between steps",
        Flag(), default=True,
    )
    cache_implementation: Optional[str] = builtin(
        CACHE, "the name of the KV-cache backend generate() builds",
        Text(),
    )
    cache_config: Optional[dict] = builtin(
        CACHE, "the keyword arguments of the cache backend",
        StrDict(),
    )
    max_cache_len: Optional[int] = builtin(
        CACHE, "the length static caches are allocated for (at least max_length - 1)",
        Integer(1),
    )

    # ---- logits processors (before the warpers, in transformers' order)
    guidance_scale: Optional[float] = builtin(
        LOGITS, "the classifier-free guidance scale (1 disables it)",
        Real(), "use 1.0 to disable guidance",
    )
    sequence_bias: Any = builtin(
        LOGITS, "the bias added to the logit that completes each token sequence",
        SequenceBias(), "use {(token, ...): bias, ...}",
    )
    encoder_repetition_penalty: Optional[float] = builtin(
        LOGITS, "the penalty on tokens that are not in the encoder input",
        Real(0.0, None, low_open=True), _ONE_OFF, default=1.0,
    )
    repetition_penalty: Optional[float] = builtin(
        LOGITS, "the penalty on tokens already present (> 1 discourages repeats)",
        Real(0.0, None, low_open=True), _ONE_OFF, default=1.0,
    )
    no_repeat_ngram_size: Optional[int] = builtin(
        LOGITS, "the size of n-grams that may occur only once",
        Integer(0), _OFF, default=0,
    )
    encoder_no_repeat_ngram_size: Optional[int] = builtin(
        LOGITS, "the size of encoder-input n-grams that may not reappear",
        Integer(0), _OFF, default=0,
    )
    bad_words_ids: Any = builtin(
        LOGITS, "the token sequences that must never be generated",
        TokenSequences(), "use a list of token-id lists like [[12], [7, 9]]",
    )
    forced_bos_token_id: Optional[int] = builtin(
        LOGITS, "the token forced as the first generated token",
        TokenIds(), "use a token id >= 0",
    )
    forced_eos_token_id: Any = builtin(
        LOGITS, "the token (or tokens) forced when max_length is reached",
        TokenIds(allow_list=True), "use a token id or a list of them",
    )
    remove_invalid_values: Optional[bool] = builtin(
        LOGITS, "whether nan and inf logits are replaced so generation cannot crash",
        Flag(), default=False,
    )
    exponential_decay_length_penalty: Any = builtin(
        LOGITS, "(start_index, decay_factor): an EOS boost growing after start_index tokens",
        DecayPenalty(), "use a pair like (10, 1.05)",
    )
    suppress_tokens: Any = builtin(
        LOGITS, "the tokens whose logits are always set to -inf",
        TokenIdList(), "use a list of token ids",
    )
    begin_suppress_tokens: Any = builtin(
        LOGITS, "the tokens suppressed at the first generated position",
        TokenIdList(), "use a list of token ids",
    )
    renormalize_logits: Optional[bool] = builtin(
        LOGITS, "whether scores are log-softmaxed again after every processor",
        Flag(),
    )
    watermarking_config: Any = builtin(
        LOGITS, "the watermarking scheme and its settings",
        Settings("WatermarkingConfig | SynthIDTextWatermarkingConfig | dict"),
    )
    token_healing: Optional[bool] = builtin(
        LOGITS, "whether the prompt's tail tokens are re-chosen before generating (needs tokenizer=)",
        Flag(),
    )

    # ---- warpers (sampling only)
    temperature: Optional[float] = builtin(
        WARPERS, "the divisor of the logits before sampling",
        Real(0.0), "use 1.0 to disable it, or do_sample=False for greedy decoding", default=1.0,
    )
    top_h: Optional[float] = builtin(
        WARPERS, "the share of the distribution's entropy to keep",
        Real(0.0, 1.0, low_open=True), "use None to disable it",
    )
    top_k: Optional[int] = builtin(
        WARPERS, "the number of most likely tokens to keep",
        Integer(0), _OFF, default=50,
    )
    top_p: Optional[float] = builtin(
        WARPERS, "the probability mass to keep",
        Real(0.0, 1.0, low_open=True), _ONE_OFF, default=1.0,
    )
    min_p: Optional[float] = builtin(
        WARPERS, "the minimum probability relative to the most likely token",
        Real(0.0, 1.0), "use None to disable it",
    )
    typical_p: Optional[float] = builtin(
        WARPERS, "the mass of locally typical tokens to keep",
        Real(0.0, 1.0, low_open=True), _ONE_OFF, default=1.0,
    )
    epsilon_cutoff: Optional[float] = builtin(
        WARPERS, "the probability below which tokens are dropped",
        Real(0.0, 1.0, high_open=True), "use 0.0 to disable it", default=0.0,
    )
    eta_cutoff: Optional[float] = builtin(
        WARPERS, "the entropy-scaled probability cutoff of eta sampling",
        Real(0.0, 1.0, high_open=True), "use 0.0 to disable it", default=0.0,
    )

    # ---- outputs
    num_return_sequences: Optional[int] = builtin(
        OUTPUTS, "the number of sequences returned per prompt",
        Integer(1), "use 1 for one sequence per prompt", default=1,
    )
    output_attentions: Optional[bool] = builtin(
        OUTPUTS, "whether attentions are returned (with return_dict_in_generate)",
        Flag(),
    )
    output_hidden_states: Optional[bool] = builtin(
        OUTPUTS, "whether hidden states are returned (with return_dict_in_generate)",
        Flag(),
    )
    output_scores: Optional[bool] = builtin(
        OUTPUTS, "whether processed scores are returned (with return_dict_in_generate)",
        Flag(), default=False,
    )
    output_logits: Optional[bool] = builtin(
        OUTPUTS, "whether raw logits are returned (with return_dict_in_generate)",
        Flag(),
    )
    return_dict_in_generate: Optional[bool] = builtin(
        OUTPUTS, "whether generate() returns an output object instead of a tensor",
        Flag(), default=False,
    )

    # ---- special tokens
    pad_token_id: Optional[int] = builtin(
        SPECIAL_TOKENS, "the padding token",
        TokenIds(allow_negative=True), "use a token id",
    )
    bos_token_id: Optional[int] = builtin(
        SPECIAL_TOKENS, "the beginning-of-sequence token",
        TokenIds(allow_negative=True), "use a token id",
    )
    eos_token_id: Any = builtin(
        SPECIAL_TOKENS, "the end-of-sequence token (or tokens)",
        TokenIds(allow_list=True, allow_negative=True), "use a token id or a list of them",
    )
    decoder_start_token_id: Any = builtin(
        SPECIAL_TOKENS, "the first decoder token of encoder-decoder models (a list gives one per row)",
        TokenIds(allow_list=True), "use a token id or one per batch row",
    )

    # ---- assisted generation
    is_assistant: Optional[bool] = builtin(
        ASSISTED, "whether this config belongs to an assistant (draft) model",
        Flag(),
    )
    num_assistant_tokens: Optional[int] = builtin(
        ASSISTED, "the number of tokens the assistant drafts per round",
        Integer(1), default=20,
    )
    num_assistant_tokens_schedule: Optional[str] = builtin(
        ASSISTED, "how num_assistant_tokens changes between rounds",
        OneOf(("constant", "heuristic", "heuristic_transient")), default="constant",
    )
    assistant_confidence_threshold: Optional[float] = builtin(
        ASSISTED, "the assistant confidence below which drafting stops early",
        Real(0.0, 1.0), default=0.4,
    )
    prompt_lookup_num_tokens: Optional[int] = builtin(
        ASSISTED, "the number of tokens prompt-lookup decoding drafts",
        Integer(1),
    )
    max_matching_ngram_size: Optional[int] = builtin(
        ASSISTED, "the longest n-gram prompt lookup matches (2 when unset)",
        Integer(1),
    )
    assistant_early_exit: Optional[int] = builtin(
        ASSISTED, "the layer whose output drafts tokens (self-speculative decoding)",
        Integer(1),
    )
    assistant_lookbehind: Optional[int] = builtin(
        ASSISTED, "the assistant tokens re-encoded to align different tokenizers",
        Integer(0), default=10,
    )
    target_lookbehind: Optional[int] = builtin(
        ASSISTED, "the target tokens re-encoded to align different tokenizers",
        Integer(0), default=10,
    )
    assistant_ensemble_weight: Optional[float] = builtin(
        ASSISTED, "the target's weight w in the verification mixture w*p + (1-w)*q",
        Real(0.0, 1.0, low_open=True, high_open=True), "use None for lossless speculative decoding",
    )
    speculation_type: Optional[str] = builtin(
        ASSISTED, "the speculative decoding variant",
        Text(),
    )

    # ---- performance
    compile_config: Any = builtin(
        PERFORMANCE, "the torch.compile settings of the decode step",
        Settings("CompileConfig | dict"),
    )
    disable_compile: Optional[bool] = builtin(
        PERFORMANCE, "whether automatic compilation of the decode step is off",
        Flag(),
    )
    prefill_chunk_size: Optional[int] = builtin(
        PERFORMANCE, "the number of prompt tokens per prefill forward pass",
        Integer(1),
    )

    # ---- deprecated in transformers or routed to plugins (Hub repos in transformers 5)
    continuous_batching_config: Optional[dict] = builtin(
        DEPRECATED, "continuous-batching settings (deprecated in transformers 5.13)",
        StrDict(),
    )
    low_memory: Optional[bool] = builtin(
        DEPRECATED, "the sequential beam search switch (unsupported since the beam search rewrite)",
        Flag(),
    )
    penalty_alpha: Optional[float] = builtin(
        DEPRECATED, "the degeneration penalty of contrastive search",
        Real(0.0, 1.0), "use None to disable contrastive search",
    )
    dola_layers: Any = builtin(
        DEPRECATED, "the premature layers DoLa decoding contrasts with",
        DolaLayers(), "use 'low', 'high' or a list of layer indices",
    )
    diversity_penalty: Optional[float] = builtin(
        DEPRECATED, "the penalty between beam groups in group beam search",
        Real(0.0), "use 0.0 to disable it", default=0.0,
    )
    num_beam_groups: Optional[int] = builtin(
        DEPRECATED, "the number of beam groups in group beam search",
        Integer(1), "use 1 to disable group beam search", default=1,
    )
    constraints: Any = builtin(
        DEPRECATED, "the constraints of constrained beam search",
        ListOf(), "use a list of constraints",
    )
    force_words_ids: Any = builtin(
        DEPRECATED, "the words constrained beam search must include",
        TokenSequences(nested=True), "use a list of token-id lists",
    )
    return_legacy_cache: Optional[bool] = builtin(
        DEPRECATED, "transformers 4.x's legacy-cache switch (accepted and ignored)",
        Flag(),
    )
    use_model_defaults: Optional[bool] = builtin(
        DEPRECATED, "whether the model's generation config fills unset fields (False: global defaults only)",
        Flag(),
    )


BUILTIN_FIELD_SPECS: Tuple[FieldSpec, ...] = builtin_field_specs(BuiltinFields)
BUILTIN_FIELD_NAMES: frozenset = frozenset(spec.name for spec in BUILTIN_FIELD_SPECS)

"""Built-in logits processors and warpers: one module per family, each a plugin with its factory.

Every processor keeps transformers' class name and constructor, so ``from genplug import
TopPLogitsWarper`` works like the transformers import. See docs/processors.md.
"""

_MODULE = "genplug.plugins.processors."

PUBLIC_CLASSES = {  # public name -> module, importable as genplug.<name>
    "TemperatureLogitsWarper": _MODULE + "temperature",
    "TopKLogitsWarper": _MODULE + "top_k",
    "TopPLogitsWarper": _MODULE + "top_p",
    "MinPLogitsWarper": _MODULE + "min_p",
    "TypicalLogitsWarper": _MODULE + "typical",
    "EpsilonLogitsWarper": _MODULE + "epsilon",
    "EtaLogitsWarper": _MODULE + "eta",
    "TopHLogitsWarper": _MODULE + "top_h",
    "RepetitionPenaltyLogitsProcessor": _MODULE + "repetition_penalty",
    "EncoderRepetitionPenaltyLogitsProcessor": _MODULE + "repetition_penalty",
    "NoRepeatNGramLogitsProcessor": _MODULE + "no_repeat_ngram",
    "EncoderNoRepeatNGramLogitsProcessor": _MODULE + "no_repeat_ngram",
    "NoBadWordsLogitsProcessor": _MODULE + "bad_words",
    "SequenceBiasLogitsProcessor": _MODULE + "sequence_bias",
    "SuppressTokensLogitsProcessor": _MODULE + "suppress_tokens",
    "SuppressTokensAtBeginLogitsProcessor": _MODULE + "suppress_tokens",
    "ForcedBOSTokenLogitsProcessor": _MODULE + "forced_tokens",
    "ForcedEOSTokenLogitsProcessor": _MODULE + "forced_tokens",
    "MinLengthLogitsProcessor": _MODULE + "min_length",
    "MinNewTokensLengthLogitsProcessor": _MODULE + "min_length",
    "ExponentialDecayLengthPenalty": _MODULE + "exponential_decay",
    "InfNanRemoveLogitsProcessor": _MODULE + "remove_invalid",
    "LogitNormalization": _MODULE + "renormalize",
    "PrefixConstrainedLogitsProcessor": _MODULE + "prefix_allowed",
    "WatermarkLogitsProcessor": _MODULE + "watermark",
    "SynthIDTextWatermarkLogitsProcessor": _MODULE + "synthid",
    "UnbatchedClassifierFreeGuidanceLogitsProcessor": _MODULE + "guidance",
}

"""Built-in models plugins."""

PUBLIC_CLASSES = {  # public class name -> module, importable as genplug.<name>
    "NativeLlamaForCausalLM": "genplug.plugins.models.llama.modeling",
    "NativeLlamaConfig": "genplug.plugins.models.llama.config",
    "NativeTokenizer": "genplug.plugins.models.llama.tokenizer",
    "CheckpointError": "genplug.plugins.models.llama.errors",
}

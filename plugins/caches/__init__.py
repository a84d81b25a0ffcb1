"""Built-in KV-cache backends, one module per backend, each registered by name through
``genplug_register_cache_backends`` (see docs/caches.md)."""

PUBLIC_CLASSES = {  # public class name -> module, importable as genplug.<name>
    "DynamicCache": "genplug.plugins.caches.dynamic",
    "StaticCache": "genplug.plugins.caches.static",
    "OffloadedCache": "genplug.plugins.caches.offloaded",
    "OffloadedStaticCache": "genplug.plugins.caches.offloaded",
    "QuantizedCache": "genplug.plugins.caches.quantized",
    "SlidingWindowCache": "genplug.plugins.caches.sliding_window",
    "HybridCache": "genplug.plugins.caches.hybrid",
    "EncoderDecoderCache": "genplug.plugins.caches.encoder_decoder",
}

"""Built-in caches plugins."""

PUBLIC_CLASSES = {}  # public class name -> module, importable as genplug.<name>


"""A plugin that fails at import time, to show genplug skipping it with a warning."""

raise ImportError("genplug-broken is broken on purpose (it needs a package that does not exist)")

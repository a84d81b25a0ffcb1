"""genplug's built-in plugins, each declared in genplug's pyproject under ``[project.entry-points.genplug]``.

They use only the public hooks a third-party plugin has; the folder names say what lives where:
``strategies/``, ``processors/``, ``stopping/``, ``caches/``, ``models/``, ``transformers/``.
"""

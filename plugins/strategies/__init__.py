"""Built-in strategies plugins."""

_MODULE = "genplug.plugins.strategies."

PUBLIC_CLASSES = {  # public class name -> module, importable as genplug.<name>
    "Constraint": _MODULE + "constraints",
    "PhrasalConstraint": _MODULE + "constraints",
    "DisjunctiveConstraint": _MODULE + "constraints",
    "ConstraintListState": _MODULE + "constraints",
    "HammingDiversityLogitsProcessor": _MODULE + "group_beam_search",
}

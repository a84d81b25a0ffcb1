"""Built-in stopping criteria, one plugin module each: max_length, max_time, stop_strings, eos.

They register through ``genplug_register_stopping_criteria`` exactly as a third-party plugin would;
see docs/stopping.md.
"""

PUBLIC_CLASSES = {  # public class name -> module, importable as genplug.<name>
    "MaxLengthCriteria": "genplug.plugins.stopping.max_length",
    "MaxTimeCriteria": "genplug.plugins.stopping.max_time",
    "EosTokenCriteria": "genplug.plugins.stopping.eos",
    "StopStringCriteria": "genplug.plugins.stopping.stop_strings",
}

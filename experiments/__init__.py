"""Running the comparisons: the configuration, one run, the records it leaves, and the protocol.

The modules at this level are the commands you type; the subpackages hold what they use:

* ``config/``: the typed configuration (every key, its type, default and valid values), the task, the
  check of a command line before anything runs;
* ``run/``: one run, from a checked config to its record (data, model, training loop, provenance,
  Hydra glue, the embedded demo task);
* ``records/``: what runs leave behind (records and prediction files, written atomically; the
  per-configuration locks that keep two launchers from training one configuration twice);
* ``progress``, ``tune``, ``choose``: ``python -m experiments.<command>`` (how far a sweep has got; the
  tuning rule; a study-wide choice on the selection split).

Imports point down: run.py -> experiments -> variants (and analysis.metrics, the GLUE metrics, numpy only).
"""

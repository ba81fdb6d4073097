"""The typed configuration: every key checked before anything runs.

* ``schema``: every key, its type, default and valid values (Hydra's ConfigStore schema); each
  variant's options made from the variant class;
* ``task``: ``Task``, built once from a task YAML: its splits, files, labels, scores, headline number;
* ``checking``: ``build(composed config) -> RunConfig``, checked and normalized (resolved rates and
  precision, the tuned file read), with its config hash;
* ``command_line``: ``check(argv)`` for run.py, progress and study, and ``planned_runs`` of a sweep;
* ``precision``: ``train.mixed_precision`` resolved for the machine;
* ``errors``: ``ConfigError``, one line naming the key, the value and what is valid.
"""
from .checking import build
from .command_line import check, open_mapping_overrides, planned_runs
from .errors import ConfigError
from .schema import RunConfig, register
from .task import Task

__all__ = ["ConfigError", "RunConfig", "Task", "build", "check", "open_mapping_overrides", "planned_runs", "register"]

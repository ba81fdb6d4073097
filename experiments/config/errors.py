"""The one error a configuration problem raises: a single line naming the key (or file and line), the bad
value and what is valid. ``run.py``, ``experiments.progress`` and ``experiments.study`` print it as
``error: <message>`` and exit non-zero, before any data, model or record is touched."""


class ConfigError(ValueError):
    """A bad setting, a bad task file, a bad tuned file: the message is one line."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))  # one line, whatever the cause said

"""python -m experiments.config: every configuration key, its default and what it accepts (markdown;
docs/configuration.md is this table)."""
from .schema import markdown, register

register()
print(markdown())

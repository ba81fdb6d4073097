"""The two comparison points every study needs: train everything, or train only the task head."""
from .base import Baseline


class FullFineTuning(Baseline):
    name = "full"
    saves_all_trainable = True  # every weight is trained, so every weight is saved

    @staticmethod
    def set_trainable(model, head_prefixes):
        for parameter in model.parameters():
            parameter.requires_grad_(True)


class HeadOnly(Baseline):
    name = "head"

    @staticmethod
    def set_trainable(model, head_prefixes):
        for name, parameter in model.named_parameters():
            parameter.requires_grad_(any(name.startswith(p + ".") for p in head_prefixes))

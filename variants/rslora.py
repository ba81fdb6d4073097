"""rsLoRA (Kalajdzievski, 2023): LoRA scaled by alpha / sqrt(r), so that higher ranks keep learning."""
import math

from .base import LowRankAdapter


class RSLoRA(LowRankAdapter):
    name = "rslora"
    step_overhead_goal = 1.0
    peft_flags = {"use_rslora": True, "use_dora": False}

    @classmethod
    def scaling(cls, alpha, rank):
        return alpha / math.sqrt(rank)

"""rsLoRA (Kalajdzievski, 2023): LoRA scaled by alpha / sqrt(r) instead of alpha / r, so that higher
ranks keep learning: h = W x + (alpha / sqrt(r)) B A x."""
import math

from .lora import LoRA, LoraCounterpart


class RSLoRA(LoRA):
    name = "rslora"
    peft = LoraCounterpart(use_rslora=True)

    @classmethod
    def scaling(cls, alpha, rank):
        return alpha / math.sqrt(rank)

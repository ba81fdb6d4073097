"""QLoRA (Dettmers et al., 2023): LoRA on top of a frozen base model stored in 4-bit NF4.

Before the adapters are made, every linear layer outside the task head (``quantize="all-linear"``) or
only the adapted ones (``quantize="targets"``) is replaced by an :class:`~variants.nf4.NF4Linear`; the
adapters are then plain LoRA (same A, B and scale) around the NF4 layers. Options: ``block_size`` (64)
and ``double_quant`` (True) of the NF4 storage.

Merging gives the NF4 layer a dense full-precision weight W_deq + dW that it then computes with, so
inference costs what a dense layer costs; unmerging drops it again, and the 4-bit codes, never
touched, stay bit-identical (``NF4Linear.add_to_weight``).
A saved QLoRA adapter holds only A, B and the head: loading it quantizes the base model again, which
gives the same codes for the same base weights.
"""
from .lora import LoRA, LoraCounterpart
from .nf4 import NF4Linear
from .targets import adaptable_layers, set_module

QUANTIZE_CHOICES = ("all-linear", "targets")


class QuantizedLoraCounterpart(LoraCounterpart):
    """PEFT's side: LoRA (the same settings) on a base loaded by transformers with bitsandbytes in NF4."""

    def base_quantization(self, options):
        """``transformers.BitsAndBytesConfig`` keywords of the matching NF4 base (the codes of the scales
        differ from ours under double quantization: bitsandbytes uses its 8-bit dynamic map)."""
        return {"load_in_4bit": True, "bnb_4bit_quant_type": "nf4",
                "bnb_4bit_use_double_quant": options["double_quant"], "bnb_4bit_compute_dtype": "float32"}

    def read_config(self, variant, peft_config):
        return None  # a PEFT LoRA folder is read as plain LoRA: it does not say its base was 4-bit


class QLoRA(LoRA):
    name = "qlora"
    quantizes = "lora"  # the benchmarks time it against our LoRA
    exact_base = False  # the frozen weights are stored in 4 bits
    options = {**LoRA.options, "block_size": 64, "double_quant": True, "quantize": "all-linear"}
    peft = QuantizedLoraCounterpart()

    @classmethod
    def check_options(cls, options):
        super().check_options(options)
        block_size = options["block_size"]
        if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 2 or block_size % 2:
            raise ValueError(f"qlora: block_size must be a positive even integer (e.g. 64), got {block_size!r}")
        if not isinstance(options["double_quant"], bool):
            raise ValueError(f"qlora: double_quant must be True or False, got {options['double_quant']!r}")
        if options["quantize"] not in QUANTIZE_CHOICES:
            raise ValueError(f"qlora: unknown quantize {options['quantize']!r}; choose one of "
                             f"{', '.join(QUANTIZE_CHOICES)}")
        if options["init"] in cls.offset_inits:
            raise ValueError(f"qlora: init={options['init']!r} would offset the frozen 4-bit weight, which "
                             "cannot be done exactly; choose one of kaiming, gaussian")

    @classmethod
    def prepare(cls, model, targets, *, rank, options, head_modules):
        """Quantize the base layers; returns the targets pointing at their NF4 versions."""
        block_size, double_quant = options["block_size"], options["double_quant"]
        layers = adaptable_layers(model, head_modules) if options["quantize"] == "all-linear" else {}
        layers.update(targets)
        targets = dict(targets)
        for layer_name, layer in layers.items():
            if isinstance(layer, NF4Linear):  # quantized before, e.g. by an earlier QLoRA adapter
                if (layer.block_size, layer.double_quant) != (block_size, double_quant):
                    raise ValueError(f"{layer_name} is already NF4 with block_size={layer.block_size}, "
                                     f"double_quant={layer.double_quant}, not the requested "
                                     f"block_size={block_size}, double_quant={double_quant}")
                continue
            quantized = NF4Linear.from_linear(layer, block_size, double_quant)
            set_module(model, layer_name, quantized)
            if layer_name in targets:
                targets[layer_name] = quantized
        return None, targets

    def create_parameters(self, *, block_size, double_quant, quantize, **lora_options):
        super().create_parameters(**lora_options)  # the NF4 options were used up by prepare

"""tiekd: TIE-KD knowledge distillation for monocular depth with a cached teacher."""

__version__ = "0.1.0"

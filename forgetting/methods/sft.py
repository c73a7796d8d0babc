"""Plain supervised fine-tuning on the user's data: the forgetting baseline (every hook a no-op)."""
from .base import Method


class SFT(Method):
    pass

"""forgetting: measure and mitigate the forgetting of safety guardrails under math fine-tuning."""

__version__ = "0.1.0"

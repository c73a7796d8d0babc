"""Methods against forgetting, one small module each, on one plug-in base (base.Method):

    sft      plain fine-tuning (the baseline)              replay   memory rows mixed into the user data
    der      logits of the aligned model on memory (MSE)   derpp    der + CE on the memory responses
    agem     task gradient projected off the memory's      lwf      aligned model's hidden states, user data
    ewc      Fisher-weighted pull to the aligned weights   l2       plain pull to the aligned weights
    lisa     alternating memory / user steps + proximal    merge    fine-tuned delta scaled by lambda
    safelora low-similarity LoRA layers projected onto    magmax   max-magnitude merge of the alignment
             the alignment subspace (aligned − unaligned)           and user task vectors
    safeinstr a count of distinct memory rows added to    refresh  each step: unlearn the user's batch (noisy
             the user data (paper's count, no repeats)              ascent), then the usual step

conf/method/<name>.yaml names the class (`_target_`) and its hyperparameters; trainer.MethodTrainer
(TRL's SFTTrainer) calls the hooks. Add a method: subclass Method, override the hooks it needs.
"""
from .base import Method

__all__ = ["Method"]

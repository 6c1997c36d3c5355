"""RLHF of causal language models with PPO through the TextGen envs.

- :mod:`agents.lm.policy`: :class:`CausalLMPolicy` (any HF causal LM + value head), :func:`model_inputs`.
- :mod:`agents.lm.rollout`: KV-cached rollouts through ``BatchedTextGenEnv``.
- :mod:`agents.lm.rlhf`: :class:`RLHFConfig`, KL penalty, KL controllers, :class:`RLHFTrainer`.
- :mod:`agents.lm.train`: the ``textgym train`` command.
- :mod:`agents.lm.checkpoint`: atomic checkpoints.

Nothing heavy is imported here; import the submodules.
"""

"""RLHF of causal language models through the TextGen envs: PPO, GRPO, RLOO, REINFORCE++.

- :mod:`agents.lm.policy`: :class:`CausalLMPolicy` (any HF causal LM + value head), :func:`model_inputs`.
- :mod:`agents.lm.rollout`: KV-cached rollouts through ``BatchedTextGenEnv``.
- :mod:`agents.lm.rlhf`: :class:`RLHFConfig`, KL penalty, KL controllers, :class:`RLHFTrainer` (an ``Agent``).
- :mod:`agents.lm.algos`: the algorithms of ``--algo`` (advantage estimators; a registry).
- :mod:`agents.lm.train`: the ``textgym train`` command.
- :mod:`agents.lm.checkpoint`: atomic checkpoints.

Nothing heavy is imported here; import the submodules.
"""

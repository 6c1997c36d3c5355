"""agents/ppo/agent.py: autoreset masking, truncation bootstrap, determinism, every option on tiny budgets,
save/load/resume, bad input, and learnability (slow, with small CI versions)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

torch = pytest.importorskip("torch")

import agents.ppo.agent as agent_mod  # noqa: E402
from agents.ppo.agent import PPOAgent, PPOConfig  # noqa: E402
from agents.ppo.core import compute_gae  # noqa: E402
from agents.ppo.policies import MLPPolicy, logprob_entropy, sample_categorical  # noqa: E402
from agents.validate import steps_to_threshold  # noqa: E402


class CounterEnv(gym.Env):
    """obs = [t]; reward 1 per step; terminates after ``length`` steps (or is truncated by a TimeLimit)."""

    def __init__(self, length: int = 3):
        self.observation_space = spaces.Box(0, 100, (1,), np.float32)
        self.action_space = spaces.Discrete(2)
        self.length, self.t = length, 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.array([0.0], np.float32), {}

    def step(self, action):
        self.t += 1
        return np.array([float(self.t)], np.float32), 1.0, self.t >= self.length, False, {}


def capture_batches(monkeypatch, agent=None):
    """Record every batch given to ppo_update (and V of the final obs [3.0] before the update)."""
    seen = []
    real = agent_mod.ppo_update

    def spy(policy, optimizer, batch, cfg, generator=None, autocast=None):
        with torch.no_grad():
            v_final = policy.value(torch.tensor([[3.0]])).item() if torch.is_tensor(batch["obs"]) else None
        seen.append({k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in batch.items()} |
                    {"v_final": v_final})
        return real(policy, optimizer, batch, cfg, generator, autocast)

    monkeypatch.setattr(agent_mod, "ppo_update", spy)
    return seen


def tiny(**kw) -> PPOConfig:
    return PPOConfig.sb3(n_envs=2, n_steps=16, update=dict(minibatch_size=8, n_epochs=2)).replace(**kw)


def test_next_step_autoreset_masks_the_reset_step(monkeypatch):
    seen = capture_batches(monkeypatch)
    cfg = PPOConfig.sb3(n_envs=1, n_steps=8, autoreset_mode="next_step", update=dict(minibatch_size=8, n_epochs=1))
    agent = PPOAgent(lambda: CounterEnv(3), cfg).learn(16)
    mask = torch.cat([b["mask"][:, 0] for b in seen]).tolist()
    # steps 0-2 are the episode, step 3 is Gymnasium's reset step (action ignored), and so on
    assert mask == [1, 1, 1, 0] * 4
    assert [(r, n) for _, r, n in agent.episodes] == [(3.0, 3)] * 4


def test_same_step_autoreset_wastes_no_step(monkeypatch):
    seen = capture_batches(monkeypatch)
    cfg = PPOConfig.sb3(n_envs=1, n_steps=9, autoreset_mode="same_step", update=dict(minibatch_size=9, n_epochs=1))
    agent = PPOAgent(lambda: CounterEnv(3), cfg).learn(9)
    assert seen[0]["mask"].sum().item() == 9
    assert [(r, n) for _, r, n in agent.episodes] == [(3.0, 3)] * 3


@pytest.mark.parametrize("mode", ["next_step", "same_step"])
def test_truncation_bootstraps_with_the_final_observation_value(monkeypatch, mode):
    seen = capture_batches(monkeypatch)
    env_fn = lambda: gym.wrappers.TimeLimit(CounterEnv(100), max_episode_steps=3)  # noqa: E731
    cfg = PPOConfig.sb3(n_envs=1, n_steps=8, autoreset_mode=mode, gamma=0.9, gae_lambda=0.5,
                        update=dict(minibatch_size=8, n_epochs=1))
    PPOAgent(env_fn, cfg).learn(8)
    b = seen[0]
    # step 2 is truncated: its return is r + gamma * V(final obs [3]) whatever lambda (no carry-over)
    want = 1.0 + 0.9 * b["v_final"]
    assert b["returns"][2, 0].item() == pytest.approx(want, rel=1e-5, abs=1e-5)
    cfg_nb = cfg.replace(bootstrap_truncation=False)
    seen.clear()
    PPOAgent(env_fn, cfg_nb).learn(8)
    assert seen[0]["returns"][2, 0].item() == pytest.approx(1.0, abs=1e-6)


def test_same_seed_same_run_bitwise_and_other_seed_differs():
    def run(seed):
        a = PPOAgent("CartPole-v1", tiny(seed=seed)).learn(256)
        return a.episodes, [p.detach().clone() for p in a.policy.parameters()]

    (e1, p1), (e2, p2), (e3, _) = run(3), run(3), run(4)
    assert e1 == e2
    assert all(torch.equal(a, b) for a, b in zip(p1, p2))
    assert e1 != e3


def test_rollout_gae_in_numpy_is_compute_gae_bitwise():
    """rollout_gae runs the recursion in numpy for speed; it must give core.compute_gae's float32 numbers exactly."""
    rng = np.random.default_rng(0)
    T, N = 64, 8
    for gamma, lam in ((0.98, 0.8), (0.99, 0.95), (1.0, 1.0), (0.9, 0.0)):
        rewards = rng.normal(size=(T, N)).astype(np.float32)
        values = rng.normal(size=(T, N)).astype(np.float32)
        last_value = rng.normal(size=N).astype(np.float32)
        dones = (rng.random((T, N)) < 0.1).astype(np.float32)
        terminated = dones * (rng.random((T, N)) < 0.5)
        adv, ret = agent_mod.rollout_gae(rewards, values, last_value, terminated, dones, gamma, lam)
        next_values = np.concatenate([values[1:], last_value[None]])
        adv_t, ret_t = compute_gae(*(torch.from_numpy(a) for a in (rewards, values, next_values, 1.0 - terminated,
                                                                     1.0 - dones)), gamma, lam)
        assert adv.dtype == torch.float32 and torch.equal(adv, adv_t) and torch.equal(ret, ret_t)


def test_action_sampling_draws_what_sb3s_categorical_draws():
    """sample_categorical is SB3's draw (torch.distributions.Categorical(logits).sample(), i.e. torch.multinomial):
    from the same RNG state, the same actions and log-probs."""
    for seed, (n, a, scale) in enumerate([(8, 2, 1.0), (1, 2, 5.0), (16, 7, 0.1), (5, 50, 30.0)]):
        logits = torch.randn(n, a, generator=torch.Generator().manual_seed(seed)) * scale
        g = torch.Generator().manual_seed(seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for _ in range(20):
                action, logprob = sample_categorical(logits, False, g)
                dist = torch.distributions.Categorical(logits=logits)
                expected = dist.sample()  # the global RNG, in the same state as g
                assert torch.equal(action, expected)
                torch.testing.assert_close(logprob, dist.log_prob(action))
        assert torch.equal(sample_categorical(logits, True, None)[0], logits.argmax(-1))


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_mlp_policy_evaluate_is_its_layers_and_logprob_entropy(activation):
    """MLPPolicy.evaluate keeps the (n, 1) shapes: the numbers and gradients of logprob_entropy on its layers."""
    torch.manual_seed(0)
    policy = MLPPolicy(spaces.Box(-1, 1, (4,), np.float32), 3, activation=activation)
    mb = {"obs": torch.randn(32, 4), "actions": torch.randint(0, 3, (32, 1))}
    logprob, entropy, value = policy.evaluate(mb)
    ref_lp, ref_ent = logprob_entropy(policy.action_net(policy.pi_net(mb["obs"])), mb["actions"][:, 0])
    ref_value = policy.value_net(policy.vf_net(mb["obs"]))
    assert torch.equal(logprob, ref_lp[:, None]) and torch.equal(entropy, ref_ent[:, None])
    assert torch.equal(value, ref_value)
    grads = torch.autograd.grad((logprob * 2 + entropy - value**2).sum(), list(policy.parameters()))
    ref = torch.autograd.grad((ref_lp[:, None] * 2 + ref_ent[:, None] - ref_value**2).sum(), list(policy.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(grads, ref))


def test_first_update_ratio_is_one_through_the_agent():
    metrics = []
    cfg = PPOConfig.sb3(n_envs=2, n_steps=32, update=dict(minibatch_size=64, n_epochs=1))
    PPOAgent("CartPole-v1", cfg).learn(64, callback=lambda a, m: metrics.append(m))
    assert metrics[0]["train/ratio"] == pytest.approx(1.0, abs=1e-6)
    assert metrics[0]["train/clip_fraction"] == 0.0


OPTIONS = [
    {},
    {"autoreset_mode": "next_step"},
    {"lr_schedule": "linear", "clip_schedule": "linear"},
    {"update": {"clip_range_vf": 0.2, "vf_clip_takes_max": False}},
    {"update": {"clip_range_vf": 0.2, "vf_clip_takes_max": True}},
    {"update": {"normalize_advantage": "batch"}},
    {"update": {"normalize_advantage": "none"}},
    {"update": {"target_kl": 0.01}},
    {"update": {"target_kl": 0.01, "target_kl_mode": "epoch"}},
    {"update": {"max_grad_norm": None}},
    {"update": {"micro_batch_size": 4}},
    {"update": {"ent_coef": 0.01, "vf_coef": 1.0}},
    {"activation": "relu", "ortho_init": False, "net_arch": (32,)},
    {"bootstrap_truncation": False},
    {"vectorization_mode": "vector_entry_point", "autoreset_mode": "next_step"},
    {"device": "cpu"},
    {"adam_fused": True},
]


@pytest.mark.parametrize("opts", OPTIONS, ids=[",".join(o.get("update", o)) or "defaults" for o in OPTIONS])
def test_every_option_runs(opts):
    metrics = []
    agent = PPOAgent("CartPole-v1", tiny(**opts)).learn(64, callback=lambda a, m: metrics.append(m))
    assert agent.num_timesteps == 64 and len(metrics) == 2
    assert np.isfinite(metrics[-1]["train/value_loss"])
    assert {"rollout/ep_rew_mean", "time/fps", "train/approx_kl", "train/explained_variance"} <= set(metrics[-1])


def test_presets_run():
    for cfg in (PPOConfig.cleanrl(n_envs=2, n_steps=16, update=dict(minibatch_size=16)),
                PPOConfig.rl_zoo_cartpole(n_steps=4, update=dict(minibatch_size=32))):
        assert PPOAgent("CartPole-v1", cfg).learn(cfg.batch_size).num_timesteps == cfg.batch_size


@pytest.mark.parametrize("arch", ["gru", "transformer"])
def test_token_policy_on_a_text_task(arch):
    agent = PPOAgent("TextGen-Copy-v0", tiny(token_arch=arch)).learn(64)
    env = gym.make("TextGen-Copy-v0")
    obs, _ = env.reset(seed=0)
    a = agent.predict(obs, deterministic=True)
    assert a.shape == () and env.action_space.contains(int(a))
    batch = {k: np.stack([v, v]) for k, v in obs.items()}
    assert agent.predict(batch).shape == (2,)


def test_action_mask_is_respected(monkeypatch):
    only_a = lambda prompt, completion: np.array([1, 0, 0, 0, 0])  # noqa: E731  (token 0 = 'a')
    seen = capture_batches(monkeypatch)
    agent = PPOAgent("TextGen-Copy-v0", tiny(), env_kwargs={"action_mask": only_a}).learn(32)
    b = seen[0]
    assert "action_mask" in b and (b["actions"][b["mask"] == 1] == 0).all()  # every action taken was 'a'
    env = gym.make("TextGen-Copy-v0", action_mask=only_a)
    obs, info = env.reset(seed=1)
    assert all(int(agent.predict(obs, action_mask=info["action_mask"])) == 0 for _ in range(20))


def test_predict_shapes_cartpole():
    agent = PPOAgent("CartPole-v1", tiny())
    obs = np.zeros(4, np.float32)
    assert agent.predict(obs).shape == ()
    assert agent.predict(np.zeros((5, 4), np.float32)).shape == (5,)


def test_save_load_and_resume(tmp_path):
    agent = PPOAgent("CartPole-v1", tiny(seed=2)).learn(64)
    agent.save(tmp_path / "ckpt")
    assert {"model.safetensors", "config.json", "optimizer.pt"} <= {p.name for p in (tmp_path / "ckpt").iterdir()}
    loaded = PPOAgent.load(tmp_path / "ckpt")
    obs = np.random.default_rng(0).normal(size=(16, 4)).astype(np.float32)
    assert np.array_equal(agent.predict(obs, deterministic=True), loaded.predict(obs, deterministic=True))
    assert loaded.config == agent.config and loaded.num_timesteps == 64
    loaded.learn(64, reset_num_timesteps=False)
    assert loaded.num_timesteps == 128
    with pytest.raises(FileNotFoundError, match="config.json"):
        PPOAgent.load(tmp_path / "nothing")


def test_logs_csv_with_sb3_keys(tmp_path):
    PPOAgent("CartPole-v1", tiny(), log_dir=tmp_path, tensorboard=False).learn(64)
    header = (tmp_path / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"step", "rollout/ep_rew_mean", "rollout/ep_len_mean", "time/fps", "train/approx_kl",
            "train/clip_fraction", "train/value_loss", "train/entropy_loss", "train/policy_gradient_loss",
            "train/explained_variance", "train/learning_rate"} <= set(header)


@pytest.mark.parametrize("bad, match", [
    ({"update": {"minibatch_size": 1000}}, "larger than the batch"),
    ({"update": {"minibatch_size": 12}}, "not a multiple"),
    ({"n_steps": 0}, "n_steps must be a positive int"),
    ({"lr_schedule": "cosine"}, "lr_schedule"),
    ({"gamma": 1.5}, "gamma"),
    ({"vectorization_mode": "vector_entry_point"}, "next-step autoreset"),
])
def test_bad_config_is_rejected_before_any_env(bad, match):
    with pytest.raises(ValueError, match=match):
        PPOAgent("CartPole-v1", PPOConfig.sb3(**{"n_envs": 2, "n_steps": 16, "update": {"minibatch_size": 8}, **bad}))


def test_bad_env_and_budget():
    with pytest.raises(ValueError, match="Discrete action spaces only"):
        PPOAgent("Pendulum-v1", tiny())
    with pytest.raises(ValueError, match="unknown env id 'CartPole-v9'.*CartPole-v1"):
        PPOAgent("CartPole-v9", tiny())
    with pytest.raises(ValueError, match="smaller than one rollout"):
        PPOAgent("CartPole-v1", tiny()).learn(31)
    with pytest.raises(TypeError, match="unknown PPO option"):
        PPOConfig.sb3(n_step=3)
    with pytest.raises(TypeError, match=r"belong to update=: pass update=\{'n_epochs'"):
        PPOConfig.sb3(n_epochs=3)  # an update field is not guessed into update


# -- learnability ------------------------------------------------------------------------------------------
def test_cartpole_learns_small():
    """CI version: after 12k steps the rolling return is far above random (about 22)."""
    torch.set_num_threads(1)
    agent = PPOAgent("CartPole-v1", PPOConfig.rl_zoo_cartpole(seed=0)).learn(12_288)
    last = np.mean([r for _, r, _ in agent.episodes[-20:]])
    assert last > 100, f"rolling return {last:.1f} after 12k steps"


@pytest.mark.slow
def test_cartpole_reaches_475_within_100k():
    """The median of 5 seeds reaches a rolling mean (20 training episodes) of 475 within 100k steps."""
    torch.set_num_threads(1)
    reached = [steps_to_threshold(PPOAgent("CartPole-v1", PPOConfig.rl_zoo_cartpole(seed=s)).learn(100_000).episodes,
                                  475.0, 20) for s in range(5)]
    assert sum(r is not None for r in reached) >= 3, reached


def text_toy(seed=0):
    from agents.validate import preset_config

    return preset_config("text-toy", "TextGen-Target-v0", seed)


def test_target_task_learns_small():
    """CI version: TextGen-Target-v0 (write 'abcda' then EOS, return up to 6; random scores about 0.4)."""
    torch.set_num_threads(1)
    agent = PPOAgent("TextGen-Target-v0", text_toy()).learn(8192)
    last = np.mean([r for _, r, _ in agent.episodes[-100:]])
    assert last > 3.0, f"mean return {last:.2f}"


@pytest.mark.slow
def test_copy_task_learned():
    """TextGen-Copy-v0: the optimum averages 3.5 (targets of 1-4 letters + EOS)."""
    torch.set_num_threads(1)
    agent = PPOAgent("TextGen-Copy-v0", text_toy()).learn(50_000)
    assert np.mean([r for _, r, _ in agent.episodes[-200:]]) >= 3.0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_runs_on_cuda_and_auto_picks_it(tmp_path):
    agent = PPOAgent("TextGen-Copy-v0", tiny()).learn(64)  # device="auto"
    assert agent.device.type == "cuda" and next(agent.policy.parameters()).is_cuda
    loaded = PPOAgent.load(agent.save(tmp_path / "m"))
    assert loaded.learn(64, reset_num_timesteps=False).num_timesteps == 128

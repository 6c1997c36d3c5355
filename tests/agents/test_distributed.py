"""Tests for agents/distributed.py: Dist in one process, and a real 2-process data-parallel PPO run on CPU (gloo)
launched with ``accelerate launch`` whose result must equal a 1-process run over the same global batch.

This file is also the 2-process worker: ``accelerate launch ... tests/agents/test_distributed.py --worker OUT``.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from agents.distributed import RANK_SEED_STRIDE, Dist  # noqa: E402
from agents.ppo.core import PPOUpdateConfig, masked_mean, masked_var, masked_whiten, ppo_update  # noqa: E402

SEED, ITERATIONS, ROWS_PER_RANK, WORLD = 7, 3, 8, 2


# --------------------------------------------------------------------------------------------------------
# the tiny data-parallel PPO loop (run by each process of the 2-process run, and by one process on 2 shards)
# --------------------------------------------------------------------------------------------------------
class TinyPolicy(torch.nn.Module):
    """A 3-action softmax policy and a value on 4-d observations; ``evaluate`` as ppo_update expects (T = 1)."""

    def __init__(self) -> None:
        super().__init__()
        self.pi = torch.nn.Linear(4, 3)
        self.v = torch.nn.Linear(4, 1)

    def evaluate(self, mb):
        dist = torch.distributions.Categorical(logits=self.pi(mb["obs"]))  # (n, 3)
        a = mb["actions"][:, 0]
        return dist.log_prob(a)[:, None], dist.entropy()[:, None], self.v(mb["obs"])  # (n, 1) each


def train(dist: Dist, shards: list[int], out: Path) -> dict:
    """PPO on a contextual bandit. Each shard is the share of one rank: its own generator seeded with
    ``seed_for_rank``. Under N processes each process holds one shard; one process can hold them all."""
    torch.manual_seed(0)  # the same initial weights everywhere (DDP would also copy rank 0's)
    policy = TinyPolicy()
    optimizer = torch.optim.Adam(policy.parameters(), lr=0.05, eps=1e-5)
    train_policy, optimizer = dist.prepare_policy(policy, optimizer)
    gens = {s: torch.Generator().manual_seed(dist.seed_for_rank(SEED, rank=s)) for s in shards}
    n = ROWS_PER_RANK * len(shards)
    cfg = PPOUpdateConfig(n_epochs=2, minibatch_size=n, normalize_advantage="none", max_grad_norm=0.5)
    log = dist.main_process_only(lambda line: (out / "log.txt").open("a").write(line + "\n"))
    history = []
    for it in range(ITERATIONS):
        # roll out: each shard draws its own observations and actions
        obs = torch.cat([torch.randn(ROWS_PER_RANK, 4, generator=gens[s]) for s in shards])  # (n, 4)
        with torch.no_grad():
            probs = torch.softmax(policy.pi(obs), -1)  # (n, 3)
            actions = torch.cat([torch.multinomial(probs[i * ROWS_PER_RANK:(i + 1) * ROWS_PER_RANK], 1,
                                                   generator=gens[s]) for i, s in enumerate(shards)])  # (n, 1)
            logprobs = torch.log(probs.gather(1, actions))  # (n, 1)
            values = policy.v(obs)  # (n, 1)
        rewards = (actions[:, 0] == obs[:, :3].argmax(-1)).float()[:, None]  # (n, 1) right arm: 1
        mask = torch.ones_like(rewards)
        advantages = dist.global_masked_whiten(rewards - values, mask)  # whitened over the global batch
        batch = {"obs": obs, "actions": actions, "logprobs": logprobs, "values": values,
                 "advantages": advantages, "returns": rewards, "mask": mask}
        stats = ppo_update(train_policy, optimizer, batch, cfg)
        metrics = dist.all_reduce_mean({k: stats[k] for k in ("train/approx_kl", "train/value_loss")})
        row = {"iteration": it, "reward_mean": float(dist.global_mean(rewards)),
               "reward_var": float(dist.global_masked_var(rewards, mask)), **metrics, "rank": dist.rank}
        log(json.dumps(row))
        history.append(row)
    params = torch.cat([p.detach().flatten() for p in policy.parameters()]).tolist()
    return {"params": params, "history": history, "seeds": [dist.seed_for_rank(SEED, rank=s) for s in shards],
            "policy": policy, "train_policy": train_policy, "optimizer": optimizer, "gens": gens}


def _worker(out: Path) -> None:
    dist = Dist()
    t0 = time.perf_counter()
    res = train(dist, [dist.rank], out)
    train_s = time.perf_counter() - t0
    # checkpoint: shared state written once by rank 0, each rank's generator state gathered into the same file
    gen = res["gens"][dist.rank]
    dist.save_state(out, shared=lambda: {"policy": res["policy"].state_dict(), "iteration": ITERATIONS},
                    rank_state={"rank": dist.rank, "generator": gen.get_state()})
    shared, mine = dist.load_state(out)
    resumed_ok = (mine["rank"] == dist.rank and torch.equal(mine["generator"], gen.get_state())
                  and shared["iteration"] == ITERATIONS)
    # no_sync: a backward inside it keeps this rank's own gradient; outside it, the gradients are averaged
    policy, train_policy = res["policy"], res["train_policy"]
    obs = torch.randn(4, 4, generator=gen)
    mb = {"obs": obs, "actions": torch.zeros(4, 1, dtype=torch.long)}
    grads = []
    for sync in (False, True):
        policy.zero_grad()
        with dist.no_sync(train_policy) if not sync else contextlib.nullcontext():
            logprob, entropy, value = train_policy.evaluate(mb)
            (logprob.sum() + entropy.sum() + value.sum()).backward()  # all parameters: DDP waits for all
        grads.append(policy.pi.weight.grad.flatten().tolist())
    gathered = dist.gather_object({"rank": dist.rank, "params": res["params"], "seed": res["seeds"][0],
                                   "grad_no_sync": grads[0], "grad_sync": grads[1],
                                   "device": dist.device.type, "resumed_ok": bool(resumed_ok),
                                   "history": res["history"], "train_s": train_s})
    if dist.is_main:
        (out / "results.json").write_text(json.dumps({"world_size": dist.world_size, "ranks": gathered}))
    dist.barrier()
    dist.end()


@pytest.fixture(autouse=True)
def _fresh_accelerate_state():
    """Accelerate keeps its state in process-wide singletons: forget it after each test, so that a Dist(cpu=True)
    made here does not decide the device of another test's Accelerator."""
    yield
    try:
        from accelerate.state import AcceleratorState, GradientState
    except ImportError:
        return
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------------------------------------
# one process
# --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("use_accelerate", [True, False])
def test_single_process_collectives_are_the_identity(use_accelerate):
    dist = Dist(cpu=True, use_accelerate=use_accelerate)
    assert (dist.rank, dist.world_size, dist.is_main, dist.device.type) == (0, 1, True, "cpu")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 7, generator=g)
    mask = (torch.rand(5, 7, generator=g) > 0.3).float()
    torch.testing.assert_close(dist.global_masked_mean(x, mask), masked_mean(x, mask))
    torch.testing.assert_close(dist.global_masked_var(x, mask), masked_var(x, mask))
    torch.testing.assert_close(dist.global_masked_whiten(x, mask), masked_whiten(x, mask))
    torch.testing.assert_close(dist.global_mean(x), x.mean())
    assert dist.all_reduce_mean({"a": 1.5, "b": torch.tensor(2.0)}) == {"a": 1.5, "b": 2.0}
    torch.testing.assert_close(dist.all_reduce_sum(x), x)
    assert dist.gather_object({"k": 1}) == [{"k": 1}]
    assert torch.equal(dist.gather(x), x)
    assert dist.broadcast_object("hello") == "hello"
    dist.barrier()
    assert dist.main_process_only(lambda v: v + 1)(1) == 2


def test_seed_for_rank_and_local_size():
    dist = Dist(cpu=True, use_accelerate=False)
    assert dist.seed_for_rank(5) == 5  # rank 0 keeps the seed: a 1-process run is the plain run
    assert dist.seed_for_rank(5, rank=3) == 5 + 3 * RANK_SEED_STRIDE
    with pytest.raises(ValueError, match="rank must be >= 0"):
        dist.seed_for_rank(5, rank=-1)
    assert dist.local_size(32, "num_envs") == 32


def test_local_size_must_divide():
    dist = Dist(cpu=True, use_accelerate=False)
    dist.world_size = 3  # as under `accelerate launch --num_processes 3`
    assert dist.local_size(12) == 4
    with pytest.raises(ValueError, match=r"num_envs=32 must be divisible by the number of processes \(3\)"):
        dist.local_size(32, "num_envs")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error when CUDA is missing")
def test_cpu_false_without_cuda_says_what_to_do():
    with pytest.raises(ValueError, match="needs a CUDA device"):
        Dist(cpu=False)


def test_prepare_policy_needs_evaluate():
    dist = Dist(cpu=True)
    model = torch.nn.Linear(2, 2)
    with pytest.raises(TypeError, match="evaluate"):
        dist.prepare_policy(model, torch.optim.SGD(model.parameters(), lr=0.1))


def test_save_and_load_state_roundtrip(tmp_path):
    dist = Dist(cpu=True)
    g = torch.Generator().manual_seed(3)
    path = dist.save_state(tmp_path, shared=lambda: {"iteration": 4, "w": torch.arange(3)},
                           rank_state={"generator": g.get_state()})
    assert path == tmp_path / "checkpoint" and path.is_dir()
    shared, mine = dist.load_state(tmp_path)
    assert shared["iteration"] == 4 and torch.equal(shared["w"], torch.arange(3))
    assert torch.equal(mine["generator"], g.get_state())


def test_load_state_errors(tmp_path):
    from agents.lm.checkpoint import save_checkpoint

    dist = Dist(cpu=True)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        dist.load_state(tmp_path)
    save_checkpoint(tmp_path, {"iteration": 1, "world_size": 2, "rank_states": [{}, {}]})
    with pytest.raises(ValueError, match=r"2 process\(es\) but this one has 1.*--num_processes 2"):
        dist.load_state(tmp_path)


def test_single_process_training_writes_the_log_once_per_iteration(tmp_path):
    res = train(Dist(cpu=True), [0, 1], tmp_path)
    lines = (tmp_path / "log.txt").read_text().splitlines()
    assert [json.loads(x)["iteration"] for x in lines] == list(range(ITERATIONS))
    assert all(abs(r["reward_mean"] - 0.5) < 0.5 for r in res["history"])  # a mean of 0/1 rewards


# --------------------------------------------------------------------------------------------------------
# two processes
# --------------------------------------------------------------------------------------------------------
@pytest.mark.timeout(300)
def test_two_process_data_parallel_matches_one_process(tmp_path):
    """``accelerate launch`` 2 CPU processes (gloo, 127.0.0.1) of the tiny PPO loop; then one process on the
    same global batch (both shards). Weights equal across ranks (gradients all-reduced), equal to the
    1-process run (same global batch), statistics synchronised, per-rank seeds differ, rank 0 alone logs,
    and the checkpoint holds both ranks' states."""
    out = tmp_path / "ddp"
    out.mkdir()
    loopback = {"GLOO_SOCKET_IFNAME": "lo"} if sys.platform.startswith("linux") else {}  # gloo on 127.0.0.1 only
    env = {**os.environ, **loopback, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "",
           "ACCELERATE_USE_CPU": "true", "PYTHONUNBUFFERED": "1"}
    # --multi_gpu selects accelerate's torchrun launcher (with --cpu it would start a single process);
    # Dist() runs on CPU + gloo because no CUDA device is visible
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(WORLD),
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_ip", "127.0.0.1", "--main_process_port", str(_free_port()),
           __file__, "--worker", str(out)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    wall = time.perf_counter() - t0
    assert proc.returncode == 0, f"2-process run failed ({wall:.1f} s):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    results = json.loads((out / "results.json").read_text())
    assert results["world_size"] == WORLD
    r0, r1 = results["ranks"]
    print(f"2-process run: {wall:.1f} s wall (launch included), training {r0['train_s']:.2f} s")

    # gradients were all-reduced: the two ranks saw different data, yet hold identical weights
    assert r0["params"] == r1["params"]
    # per-rank seeds differ, and each rank's data differed (rank 0's seed is the run's seed)
    assert [r0["seed"], r1["seed"]] == [SEED, SEED + RANK_SEED_STRIDE]
    assert r0["device"] == r1["device"] == "cpu"
    # statistics synchronised: every rank logged the same global values
    assert r0["history"] == [{**h, "rank": 0} for h in r1["history"]]
    # rank 0 alone wrote the log: one line per iteration, from rank 0
    lines = [json.loads(x) for x in (out / "log.txt").read_text().splitlines()]
    assert [(x["iteration"], x["rank"]) for x in lines] == [(i, 0) for i in range(ITERATIONS)]
    # one checkpoint for the run, holding both ranks' states; each rank loaded its own back
    state = torch.load(out / "checkpoint" / "state.pt", weights_only=False)
    assert state["world_size"] == WORLD and [s["rank"] for s in state["rank_states"]] == [0, 1]
    assert not torch.equal(state["rank_states"][0]["generator"], state["rank_states"][1]["generator"])
    assert r0["resumed_ok"] and r1["resumed_ok"]
    # gradient accumulation: inside no_sync each rank keeps its own gradient, outside they are averaged
    assert r0["grad_no_sync"] != r1["grad_no_sync"]
    assert r0["grad_sync"] == r1["grad_sync"]
    torch.testing.assert_close(torch.tensor(r0["grad_sync"]),
                               (torch.tensor(r0["grad_no_sync"]) + torch.tensor(r1["grad_no_sync"])) / 2)

    # the same global batch in one process gives the same training (up to float summation order)
    single = train(Dist(cpu=True), list(range(WORLD)), tmp_path)
    torch.testing.assert_close(torch.tensor(r0["params"]), torch.tensor(single["params"]), rtol=1e-5, atol=1e-6)
    for h2, h1 in zip(r0["history"], single["history"]):
        for k in ("reward_mean", "reward_var", "train/approx_kl", "train/value_loss"):
            assert h2[k] == pytest.approx(h1[k], rel=1e-4, abs=1e-7), (k, h2, h1)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        _worker(Path(sys.argv[2]))
    else:
        sys.exit("usage: accelerate launch ... tests/agents/test_distributed.py --worker OUT_DIR")

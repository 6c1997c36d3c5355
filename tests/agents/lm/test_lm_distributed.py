"""``textgym train`` under ``accelerate launch`` with 2 CPU processes (gloo on 127.0.0.1) against 1 process.

What must match and why: ``num_envs`` and ``ppo.minibatch_size`` are global, and global env ``g`` draws its prompt
and its tokens from seeds derived from (seed, iteration, g) alone (``agents.lm.rlhf.sampling_seed``). So the two
processes (envs 0-3 and 4-7) roll out exactly the 8 episodes the single process rolls out. With one minibatch per
epoch (minibatch = the whole batch) the global loss is the same sum over the same tokens divided by the same
global token count, and DDP averages the two halves' gradients: the updates are equal up to float summation
order. Hence the per-iteration reward mean and KL (over the global batch) and the final trainable weights must
agree within float tolerance (1e-4 relative; a mismatch in seeding, normalisation or gradient averaging moves
them by far more).

This file is also the worker: ``accelerate launch ... tests/agents/lm/test_lm_distributed.py --worker ARGS``.
"""

from __future__ import annotations

import csv
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")

REPO = Path(__file__).resolve().parents[3]
if str(REPO) not in sys.path:  # the worker is started as a script
    sys.path.insert(0, str(REPO))

from tests.conftest import make_tiny_gpt2  # noqa: E402


def argv(model, out, iterations, *extra):
    return ["train", "--task", "TextGen-v0", "--model", str(model), "--tokenizer", "char:abc>", "--prompts",
            "gen:copy", "--scorer", "copy", "--iterations", str(iterations), "--out", str(out), "--num-envs", "8",
            "--max-new-tokens", "4", "--ppo.minibatch-size", "8", "--ppo.micro-batch-size", "2", "--ppo.n-epochs",
            "2", "--lr", "1e-3", "--checkpoint-every", "100", "--n-samples", "2", "--progress", "false",
            "--tensorboard", "false", "--score-norm", "batch", "--num-threads", "1", *extra]


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(args: list[str], env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """The 2-process launch of tests/agents/test_distributed.py: --multi_gpu (torchrun launcher) with CUDA hidden."""
    loopback = {"GLOO_SOCKET_IFNAME": "lo"} if sys.platform.startswith("linux") else {}
    env = {**os.environ, **loopback, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "ACCELERATE_USE_CPU": "true",
           "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", **(env_extra or {})}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_ip", "127.0.0.1", "--main_process_port", str(_free_port()), __file__, "--worker", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=150, cwd=REPO)


def weights(folder):
    return {k: v for k, v in transformers.AutoModelForCausalLM.from_pretrained(folder).state_dict().items()}


@pytest.mark.timeout(200)
def test_two_processes_match_one_process_and_resume(tmp_path, capsys):
    from agents.cli import main as cli
    from agents.lm.checkpoint import find_checkpoint, load_checkpoint

    model = tmp_path / "tiny"
    make_tiny_gpt2(vocab_size=5).save_pretrained(model)
    two, one = tmp_path / "two", tmp_path / "one"

    t0 = time.perf_counter()
    proc = launch(argv(model, two, 2))
    wall = time.perf_counter() - t0
    assert proc.returncode == 0, f"2-process run failed ({wall:.0f} s):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    print(f"2-process run: {wall:.1f} s wall, launch included")
    # rank 0 alone wrote: one metrics log (one row per iteration), one checkpoint holding both ranks' states
    assert [r["step"] for r in rows(two / "metrics.csv")] == ["1", "2"]
    assert sorted(p.name for p in two.iterdir() if p.name.startswith(("checkpoint", ".checkpoint"))) == ["checkpoint"]
    assert sorted(p.name for p in two.glob("*.csv")) == ["metrics.csv"]
    state = load_checkpoint(find_checkpoint(two))
    assert state["iteration"] == 2 and state["world_size"] == 2 and len(state["rank_states"]) == 2
    for name in ("plot.png", "samples.md", "config.json", "final/config.json"):
        assert (two / name).exists(), name

    # the same global batch in one process (in this process, no accelerate)
    assert cli(argv(model, one, 2)) == 0
    r1, r2 = rows(one / "metrics.csv"), rows(two / "metrics.csv")
    for a, b in zip(r1, r2):
        for k in ("rollout/ep_rew_mean", "rlhf/kl_ref", "rlhf/kl_coef", "train/value_loss", "train/approx_kl",
                  "rollout/ep_len_mean"):
            assert float(b[k]) == pytest.approx(float(a[k]), rel=1e-4, abs=1e-6), (k, a[k], b[k])
    w1, w2 = weights(one / "final"), weights(two / "final")
    initial = weights(model)
    assert any(not torch.equal(w1[k], initial[k]) for k in w1)  # training moved the weights
    for k in w1:
        torch.testing.assert_close(w2[k], w1[k], rtol=1e-4, atol=1e-5, msg=lambda m, k=k: f"{k}: {m}")

    # a 2-process checkpoint cannot be resumed by 1 process: a clear error
    assert cli(argv(model, two, 3, "--resume")) == 2
    assert "--num_processes 2" in capsys.readouterr().err

    # resume with 2 processes: iteration 3 continues the run exactly (it matches the 1-process iteration 3);
    # at iteration 4 rank 1 alone gets a NaN loss: both processes stop with status 1, nothing hangs, and the
    # checkpoint stays the last good one (iteration 2)
    assert cli(argv(model, one, 3, "--resume")) == 0
    proc = launch(argv(model, two, 4, "--resume"), {"TEXTGYM_TEST_NAN_RANK": "1", "TEXTGYM_TEST_NAN_AT": "4"})
    assert proc.returncode != 0 and "not finite on 1 other process" in proc.stderr, proc.stderr[-4000:]
    # both workers stopped on the error path with a message, no worker traceback (the launcher reports the
    # non-zero exit with its own traceback, and may SIGTERM the slower rank once the first has exited)
    assert "[rank0]: Traceback" not in proc.stderr and "[rank1]: Traceback" not in proc.stderr, proc.stderr[-4000:]
    assert "[rank 0] error:" in proc.stderr and "[rank 1] error:" in proc.stderr, proc.stderr[-4000:]
    assert "process group still initialized" not in proc.stderr and "terminate called" not in proc.stderr, (
        proc.stderr[-4000:])
    r1, r2 = rows(one / "metrics.csv"), rows(two / "metrics.csv")
    assert [r["step"] for r in r2] == ["1", "2", "3"]
    for k in ("rollout/ep_rew_mean", "rlhf/kl_ref", "train/value_loss"):
        assert float(r2[2][k]) == pytest.approx(float(r1[2][k]), rel=1e-4, abs=1e-6), (k, r1[2][k], r2[2][k])
    assert load_checkpoint(find_checkpoint(two))["iteration"] == 2


@pytest.mark.timeout(200)
def test_two_processes_match_one_process_with_grpo(tmp_path):
    """A critic-free algo under data parallelism: GRPO with groups of 2 (each process's 4 envs hold 2 whole groups:
    group statistics never cross processes), a per-row loss aggregation (its row count is all-reduced) and the
    k3 KL loss. The 2-process run must equal the 1-process one, and neither saves a value head."""
    from agents.cli import main as cli
    from agents.lm.checkpoint import find_checkpoint, load_checkpoint

    model = tmp_path / "tiny"
    make_tiny_gpt2(vocab_size=5).save_pretrained(model)
    two, one = tmp_path / "two", tmp_path / "one"
    extra = ("--algo", "grpo", "--group-size", "2", "--loss-agg", "seq-mean-token-mean", "--kl-loss-coef", "0.1")
    proc = launch(argv(model, two, 2, *extra))
    assert proc.returncode == 0, f"2-process grpo run failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    assert cli(argv(model, one, 2, *extra)) == 0
    r1, r2 = rows(one / "metrics.csv"), rows(two / "metrics.csv")
    assert [r["step"] for r in r2] == ["1", "2"]
    for a, b in zip(r1, r2):
        for k in ("rollout/ep_rew_mean", "rlhf/kl_ref", "train/loss", "train/kl_loss", "train/approx_kl",
                  "rlhf/frac_reward_zero_std"):
            assert float(b[k]) == pytest.approx(float(a[k]), rel=1e-4, abs=1e-6), (k, a[k], b[k])
    w1, w2 = weights(one / "final"), weights(two / "final")
    assert any(not torch.equal(w1[k], v) for k, v in weights(model).items())
    for k in w1:
        torch.testing.assert_close(w2[k], w1[k], rtol=1e-4, atol=1e-5, msg=lambda m, k=k: f"{k}: {m}")
    assert not any("value_head" in k for k in load_checkpoint(find_checkpoint(two))["policy"])


def _worker(args: list[str]) -> int:
    torch.set_num_threads(1)
    nan_rank, nan_at = os.environ.get("TEXTGYM_TEST_NAN_RANK"), os.environ.get("TEXTGYM_TEST_NAN_AT")
    if nan_rank is not None and os.environ.get("RANK") == nan_rank:
        from agents.lm.policy import CausalLMPolicy
        from agents.lm.rlhf import RLHFTrainer

        real_step, real_evaluate, now = RLHFTrainer.run_iteration, CausalLMPolicy.evaluate, {"iteration": 0}

        def step(self):
            now["iteration"] = self.iteration + 1
            return real_step(self)

        def evaluate(self, mb):
            lp, ent, v = real_evaluate(self, mb)
            return (lp * float("nan") if now["iteration"] >= int(nan_at) else lp), ent, v

        RLHFTrainer.run_iteration, CausalLMPolicy.evaluate = step, evaluate
    from agents.cli import main as cli

    code = cli(args)
    import torch.distributed as td

    if td.is_initialized():  # every path must release the process group (left to interpreter exit, it can abort)
        print(f"[rank {os.environ.get('RANK')}] process group still initialized at exit", file=sys.stderr)
    return code


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--worker":
        sys.exit(_worker(sys.argv[2:]))
    sys.exit("usage: accelerate launch ... tests/agents/lm/test_lm_distributed.py --worker TRAIN_ARGS")

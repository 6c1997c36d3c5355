"""``textgym train`` end to end on a tiny GPT-2: files written, resume continues, the export loads in plain
transformers, and the bad inputs (resume from another config, NaN loss, missing model, vocab mismatch)."""

from __future__ import annotations

import csv
import json

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from agents.cli import build_parser  # noqa: E402
from agents.cli import main as cli  # noqa: E402
from agents.config import dataclass_from_args  # noqa: E402
from agents.lm.checkpoint import find_checkpoint, load_checkpoint  # noqa: E402
from agents.lm.rlhf import RLHFConfig  # noqa: E402
from tests.conftest import make_tiny_gpt2  # noqa: E402


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny-gpt2")
    make_tiny_gpt2(vocab_size=5).save_pretrained(d)  # char:abc> has 5 ids (a, b, c, >, EOS)
    return d


def argv(model, out, iterations, *extra):
    return ["train", "--task", "TextGen-v0", "--model", str(model), "--tokenizer", "char:abc>", "--prompts",
            "gen:copy", "--scorer", "copy", "--iterations", str(iterations), "--out", str(out), "--num-envs", "8",
            "--max-new-tokens", "4", "--ppo.minibatch-size", "4", "--ppo.micro-batch-size", "2", "--ppo.n-epochs",
            "2", "--lr", "1e-3", "--checkpoint-every", "1", "--n-samples", "3", "--progress", "false", *extra]


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_train_resume_export(tiny_dir, tmp_path):
    out = tmp_path / "run"
    assert cli(argv(tiny_dir, out, 2)) == 0
    for name in ("metrics.csv", "plot.png", "samples.md", "config.json", "checkpoint/state.pt", "final/config.json"):
        assert (out / name).exists(), name
    r = rows(out / "metrics.csv")
    assert [row["step"] for row in r] == ["1", "2"]
    assert all(row["rollout/ep_rew_mean"] and row["rlhf/kl_ref"] for row in r)
    assert "| prompt | before |" in (out / "samples.md").read_text()
    assert load_checkpoint(find_checkpoint(out))["iteration"] == 2

    # resume continues from the checkpoint (only --iterations changes)
    assert cli(argv(tiny_dir, out, 3, "--resume")) == 0
    assert [row["step"] for row in rows(out / "metrics.csv")] == ["1", "2", "3"]
    assert load_checkpoint(find_checkpoint(out))["iteration"] == 3

    # the export loads in plain transformers and differs from the initial weights
    exported = transformers.AutoModelForCausalLM.from_pretrained(out / "final")
    initial = transformers.AutoModelForCausalLM.from_pretrained(tiny_dir)
    ids = torch.tensor([[0, 1, 2]])
    assert not torch.allclose(exported(ids).logits, initial(ids).logits)


def test_resume_from_another_config_is_refused(tiny_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert cli(argv(tiny_dir, out, 1)) == 0
    assert cli(argv(tiny_dir, out, 2, "--resume", "--kl-coef", "0.5")) == 2
    err = capsys.readouterr().err
    assert "another config" in err and "kl_coef" in err
    assert cli(argv(tiny_dir, out, 2)) == 2  # not --resume: the folder already holds a run
    assert "--resume" in capsys.readouterr().err
    assert cli(argv(tiny_dir, tmp_path / "empty", 2, "--resume")) == 2  # nothing to resume


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tiny_dir, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    assert cli(argv(tiny_dir, out, 2)) == 0
    good = load_checkpoint(find_checkpoint(out))

    from agents.lm.policy import CausalLMPolicy

    real = CausalLMPolicy.evaluate

    def nan_evaluate(self, mb):
        lp, ent, v = real(self, mb)
        return lp * float("nan"), ent, v

    monkeypatch.setattr(CausalLMPolicy, "evaluate", nan_evaluate)
    assert cli(argv(tiny_dir, out, 4, "--resume")) == 1
    err = capsys.readouterr().err
    assert "PPO loss is nan" in err and "last good checkpoint" in err
    kept = load_checkpoint(find_checkpoint(out))
    assert kept["iteration"] == 2
    for k, v in good["policy"].items():
        assert torch.equal(kept["policy"][k], v)


def test_missing_model_and_vocab_mismatch(tiny_dir, tmp_path, capsys):
    assert cli(argv(tmp_path / "nowhere", tmp_path / "a", 1)) == 2
    err = capsys.readouterr().err
    assert "nowhere" in err and "not reachable offline" in err
    bad = ["--tokenizer", "byte"]  # 257 ids, the model outputs 5
    assert cli(argv(tiny_dir, tmp_path / "b", 1, *bad)) == 2
    assert "257 ids" in capsys.readouterr().err


def test_config_json_records_the_flags(tiny_dir, tmp_path):
    out = tmp_path / "run"
    assert cli(argv(tiny_dir, out, 1, "--kl-loss-coef", "0.01", "--missing-eos-penalty", "1.0")) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["kl_loss_coef"] == 0.01 and cfg["missing_eos_penalty"] == 1.0 and cfg["ppo"]["n_epochs"] == 2


def test_train_against_a_reward_model_from_the_cli(tiny_dir, tmp_path, capsys):
    """The documented workflow: `textgym train-rm DB --out RM`, then `textgym train --scorer reward-model:RM`."""
    from tests.human.conftest import scripted_score, synthetic_samples
    from textgym.human.reward_model import RewardModelScorer
    from textgym.human.store import RatingStore

    store = RatingStore(tmp_path / "ratings.db")
    rows_ = synthetic_samples(n_prompts=4, per_prompt=3)
    for i, row in zip(store.add_samples(rows_), rows_):
        store.add_rating(i, "script", score=scripted_score(row["completion"]))
    store.close()
    rm = tmp_path / "rm"
    assert cli(["train-rm", str(tmp_path / "ratings.db"), "--out", str(rm), "--backbone", "tiny", "--steps", "2",
                "--max-length", "32"]) == 0

    out = tmp_path / "run"
    assert cli(argv(tiny_dir, out, 1, "--scorer", f"reward-model:{rm}", "--tensorboard", "false")) == 0
    assert json.loads((out / "config.json").read_text())["scorer"] == f"reward-model:{rm}"
    assert len(rows(out / "metrics.csv")) == 1
    # the scores of the run are the reward model's
    before = json.loads((out / "samples_before.json").read_text())
    from textgym.core import Sample

    expected = RewardModelScorer(rm).score([Sample(s["prompt"], s["completion"]) for s in before])
    assert [s["score"] for s in before] == pytest.approx(expected.tolist(), abs=1e-5)
    assert len(set(expected.round(6).tolist())) > 1  # not a constant: the model reads the text

    # the JSON form reaches the config as a dict; bad specs stop before any model is loaded, saying what to write
    args = build_parser("train").parse_args(argv(tiny_dir, out, 1, "--scorer", f'{{"name": "reward-model", '
                                                                               f'"path": "{rm}"}}'))
    assert dataclass_from_args(RLHFConfig, args).scorer == {"name": "reward-model", "path": str(rm)}
    capsys.readouterr()
    assert cli(argv(tmp_path / "no-model", tmp_path / "x", 1, "--scorer", "reward-model")) == 2
    assert "write 'reward-model:PATH' or {\"name\": \"reward-model\", \"path\": \"PATH\"}" in capsys.readouterr().err
    assert cli(argv(tiny_dir, tmp_path / "y", 1, "--scorer", f"reward-model:{tmp_path / 'nothing'}")) == 2
    assert "not a textgym reward model folder" in capsys.readouterr().err


def test_resume_with_trunk_reuse_continues_the_run_exactly(tmp_path):
    """--trainable-layers 1 (trunk reuse, a reference of one block): 2 iterations + resume to 3 give the same
    third iteration as 3 straight ones (checkpointed weights, optimizer and RNG states; the reference is rebuilt
    from the model)."""
    model = tmp_path / "tiny3"
    from tests.agents.lm.test_lm_policy import tiny_llama

    tiny_llama(layers=3, vocab_size=5).save_pretrained(model)
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert cli(argv(model, straight, 3, "--trainable-layers", "1")) == 0
    assert cli(argv(model, resumed, 2, "--trainable-layers", "1")) == 0
    assert cli(argv(model, resumed, 3, "--trainable-layers", "1", "--resume")) == 0
    a, b = rows(straight / "metrics.csv")[-1], rows(resumed / "metrics.csv")[-1]
    assert a["step"] == b["step"] == "3"
    for k in ("rollout/ep_rew_mean", "rlhf/kl_ref", "train/loss", "train/value_loss", "train/approx_kl"):
        assert float(a[k]) == pytest.approx(float(b[k]), rel=1e-5, abs=1e-7), k
    assert float(a["rlhf/kl_ref"]) != 0.0


def test_bf16_without_native_support_is_a_clear_error(tiny_dir, tmp_path, monkeypatch, capsys):
    import agents.lm.rlhf as rlhf

    monkeypatch.setattr(rlhf, "cpu_supports_bf16", lambda: False)  # as on the AVX2 CPU this was written on
    assert cli(argv(tiny_dir, tmp_path / "run", 1, "--precision", "bf16")) == 2
    err = capsys.readouterr().err
    assert "no native bf16" in err and "--precision auto or fp32" in err

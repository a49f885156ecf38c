"""LoRA runs (lora_r > 0, peft): only the adapter trains, the checkpoint's HF model is the adapted policy (and
loads as model=PATH and through PEFT), logged entropy is that policy's, and --resume continues the adapter."""

import pytest
import torch
from peft import PeftModel

from analysis.errors import UsageError
from analysis.store_reader import StoreReader
from trainer.config import load_config
from trainer.loop import build_policy, train
from trainer.lora import ADAPTER_DIR
from trainer.models import load_policy

OVERRIDES = [
    "prompts_per_step=4",
    "group_size=4",
    "warmup_steps=40",
    "checkpoint_every=1",
    "threads=1",
    "alerts=off",
    "lora_r=4",
    "lora_targets=q_proj,v_proj,up_proj",
    "lr=0.01",
]


def ckpt(tmp_path, step):
    return tmp_path / "r" / "checkpoints" / f"step_{step}"


@pytest.mark.slow
def test_lora_trains_the_adapter_only_and_logs_the_adapted_policy(tmp_path):
    cfg = load_config(None, [*OVERRIDES, "steps=2"])
    train(cfg, tmp_path, run_id="r", progress=False)
    base, _, _ = build_policy(cfg.model_copy(update={"lora_r": 0}), torch.device("cpu"))
    base_sd = base.state_dict()
    merged, _ = load_policy(str(ckpt(tmp_path, 2)), seed=0)
    changed = {k for k, v in merged.state_dict().items() if not torch.equal(v, base_sd[k])}
    targets = ("q_proj.weight", "v_proj.weight", "up_proj.weight")
    assert changed and all(k.endswith(targets) for k in changed), changed  # biases, norms, head: untouched
    # The saved HF model is base + (alpha / r) B A of the saved adapter: PEFT on the base gives its logits.
    adapted = PeftModel.from_pretrained(base, str(ckpt(tmp_path, 2) / ADAPTER_DIR)).eval()
    ids = torch.randint(4, 40, (2, 12))
    with torch.no_grad():
        assert torch.allclose(adapted(ids).logits, merged.eval()(ids).logits, atol=1e-5)

    # Tokens of step 2 were sampled (and their entropy logged) by the adapted policy after step 1.
    policy = load_policy(str(ckpt(tmp_path, 1)), seed=0)[0].double().eval()
    reader = StoreReader(tmp_path)
    samples = reader.samples("r", 2).set_index("sample_id")
    checked = 0
    for sample_id, rows in reader.tokens("r", 2).groupby("sample_id"):
        prompt, response = (
            list(samples.loc[sample_id, "prompt_token_ids"]),
            list(samples.loc[sample_id, "response_token_ids"]),
        )
        with torch.no_grad():
            logits = (
                policy(torch.tensor([prompt + response])).logits[0, len(prompt) - 1 : -1] / cfg.temperature
            )
        logp_all = torch.log_softmax(logits, -1)  # (R, V) float64
        ref = -(logp_all.exp() * logp_all).sum(-1)
        got = torch.tensor(rows.sort_values("position")["entropy"].tolist(), dtype=torch.float64)
        assert torch.allclose(got, ref, atol=1e-4)
        checked += len(got)
    assert checked > 0

    # --resume loads the adapter onto the rebuilt base and trains on from step 2.
    train(load_config(None, [*OVERRIDES, "steps=3"]), tmp_path, run_id="r", resume=True, progress=False)
    last, _ = load_policy(str(ckpt(tmp_path, 3)), seed=0)
    moved = [k for k, v in last.state_dict().items() if not torch.equal(v, merged.state_dict()[k])]
    assert moved and all(k.endswith(targets) for k in moved)


def test_lora_targets_that_match_nothing_are_refused(tmp_path):
    cfg = load_config(None, [*OVERRIDES, "lora_targets=no_such_proj", "warmup_steps=0"])
    with pytest.raises(UsageError, match="lora_targets 'no_such_proj'"):
        build_policy(cfg, torch.device("cpu"))

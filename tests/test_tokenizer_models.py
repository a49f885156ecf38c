import json
import string

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from analysis.errors import UsageError
from trainer.models import PRESETS, is_preset, load_policy
from trainer.tokenizer import build_char_tokenizer
from trainer.warmup import encode_prompt


@pytest.fixture(scope="module")
def tok():
    return build_char_tokenizer()


def test_char_tokenizer_round_trips_every_printable_character(tok):
    rng = np.random.default_rng(0)
    texts = ["", " ", "  a  b ", "3+5+2=10", "line\n\tnext", string.printable.strip("\r\x0b\x0c")]
    texts += ["".join(rng.choice(list(string.printable[:95]), size=40)) for _ in range(20)]
    for text in texts:
        ids = tok.encode(text, add_special_tokens=False)
        assert len(ids) == len(text)  # one token per character
        assert tok.decode(ids, skip_special_tokens=True) == text
        with_specials = [tok.bos_token_id, *ids, tok.eos_token_id, tok.pad_token_id]
        assert tok.decode(with_specials, skip_special_tokens=True) == text


def test_char_tokenizer_specials_and_left_padding(tok):
    assert (tok.pad_token, tok.eos_token, tok.bos_token, tok.unk_token) == (
        "<pad>",
        "<eos>",
        "<bos>",
        "<unk>",
    )
    assert len({tok.pad_token_id, tok.eos_token_id, tok.bos_token_id, tok.unk_token_id}) == 4
    assert tok.encode("é", add_special_tokens=False) == [tok.unk_token_id]
    batch = tok(["ab", "abcd"], padding=True)
    assert batch["input_ids"][0][:2] == [tok.pad_token_id] * 2 and batch["attention_mask"][0] == [0, 0, 1, 1]


def test_char_tokenizer_survives_save_and_auto_load(tok, tmp_path):
    tok.save_pretrained(tmp_path)
    back = AutoTokenizer.from_pretrained(tmp_path, local_files_only=True)
    text = "Hello, world!  7+8=15\n"
    assert back.encode(text, add_special_tokens=False) == tok.encode(text, add_special_tokens=False)
    assert back.decode(tok.encode(text), skip_special_tokens=True) == text
    assert back.padding_side == "left"
    assert (back.pad_token_id, back.eos_token_id, back.bos_token_id) == (
        tok.pad_token_id,
        tok.eos_token_id,
        tok.bos_token_id,
    )


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_builds_fp32_and_is_seeded(name):
    model, tok = load_policy(name, seed=3)
    assert is_preset(name) and not is_preset("gpt2")
    assert model.config.vocab_size == len(tok)
    assert getattr(model.config, "max_position_embeddings", getattr(model.config, "n_positions", 0)) >= 128
    assert all(p.dtype == torch.float32 for p in model.parameters())
    same, _ = load_policy(name, seed=3)
    other, _ = load_policy(name, seed=4)
    pairs = list(zip(model.parameters(), same.parameters(), other.parameters(), strict=True))
    assert all(torch.equal(a, b) for a, b, _ in pairs)
    assert not all(torch.equal(a, c) for a, _, c in pairs)
    x = torch.tensor([encode_prompt(tok, "1+2=")])
    model.train()
    train_logits = model(input_ids=x).logits
    model.eval()
    assert torch.equal(train_logits, model(input_ids=x).logits)  # no dropout: train/eval agree


def test_load_policy_keeps_the_callers_rng_stream():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    load_policy("tiny-qwen2", seed=9)
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_generates_left_padded_batch_like_single_prompts(name):
    model, tok = load_policy(name, seed=0)
    model.eval()
    texts = ["1+2=", "3+4+5=", "pick:"]
    batch = tok.pad([{"input_ids": encode_prompt(tok, t)} for t in texts], return_tensors="pt")
    assert (batch["input_ids"][:, 0] == tok.pad_token_id).any()  # left padding really happened
    kw = {"max_new_tokens": 4, "do_sample": False, "pad_token_id": tok.pad_token_id}
    out = model.generate(**batch, **kw, output_scores=True, return_dict_in_generate=True)
    assert out.sequences.shape[0] == 3 and out.sequences.shape[1] > batch["input_ids"].shape[1]
    for i, text in enumerate(texts):
        single = torch.tensor([encode_prompt(tok, text)])
        ref = model.generate(
            input_ids=single,
            attention_mask=torch.ones_like(single),
            **kw,
            output_scores=True,
            return_dict_in_generate=True,
        )
        for step, scores in enumerate(ref.scores):  # until this prompt's eos: same logits as unpadded
            torch.testing.assert_close(out.scores[step][i], scores[0], atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_saved_preset_loads_back_with_identical_logits(name, tmp_path):
    model, tok = load_policy(name, seed=1)
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    back, back_tok = load_policy(str(tmp_path), seed=99)
    x = torch.tensor([encode_prompt(tok, "9+9+9="), encode_prompt(tok, "0+1+2=")])
    model.eval(), back.eval()
    assert torch.equal(model(input_ids=x).logits, back(input_ids=x).logits)
    assert back_tok.padding_side == "left" and back_tok.pad_token_id == tok.pad_token_id
    assert all(p.dtype == torch.float32 for p in back.parameters())


def test_local_directory_without_pad_token_pads_with_eos(tmp_path):
    model, tok = load_policy("tiny-gpt2", seed=0)
    tok.pad_token = None
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    _, back = load_policy(str(tmp_path), seed=0)
    assert back.pad_token_id == back.eos_token_id and back.padding_side == "left"


def _corrupt_config(path):
    path.mkdir()
    (path / "config.json").write_text("{not json")
    return path


def _bad_weights(path):
    model, tok = load_policy("tiny-qwen2", seed=0)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    (path / "model.safetensors").write_bytes(b"garbage")
    return path


def _unknown_model_type(path):
    path.mkdir()
    (path / "config.json").write_text(json.dumps({"model_type": "no-such-arch"}))
    return path


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (lambda p: p / "missing", "no such directory"),
        (lambda p: (p / "empty").mkdir() or p / "empty", "no config.json"),
        (lambda p: _corrupt_config(p / "corrupt"), "not valid JSON"),
        (lambda p: _unknown_model_type(p / "arch"), "cannot load a causal LM"),
        (lambda p: _bad_weights(p / "weights"), "cannot load a causal LM"),
    ],
)
def test_bad_model_paths_give_one_line_usage_errors(tmp_path, make, fragment):
    path = make(tmp_path)
    with pytest.raises(UsageError) as info:
        load_policy(str(path), seed=0)
    message = str(info.value)
    assert fragment in message and str(path) in message and "\n" not in message

"""Batched sampling with a KV cache, keeping response token ids and the rollout path's log-probs.

A hand-written sampling loop rather than `model.generate`, so that no generation_config shipped with a
checkpoint (top_k, top_p, repetition penalty) silently changes the distribution: tokens are drawn from
exactly softmax(logits / temperature), the policy whose log-probs and entropy we log.
"""

import copy
import inspect
from dataclasses import dataclass

import torch
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from trainer.distributed import SINGLE, Ranks, full_value
from trainer.logprobs import head_logprobs
from trainer.tasks import Prompt
from trainer.warmup import encode_prompt


@dataclass
class Rollout:
    """One step's completions; shapes use B = prompts x group_size, P = prompt length, R = response length."""

    input_ids: torch.Tensor  # (B, P + R) left-padded prompt, then response (pad after eos)
    attention_mask: torch.Tensor  # (B, P + R) 1 on real prompt tokens and response tokens up to eos
    response_mask: torch.Tensor  # (B, R) 1 on response tokens up to and including eos
    rollout_logp: torch.Tensor  # (B, R) log-probs of the sampled tokens on the rollout (KV-cache) path
    group_ids: torch.Tensor  # (B,) index of the prompt each completion answers
    prompts: list[Prompt]  # (B,) the prompt of each completion
    responses: list[str]  # (B,) decoded responses, special tokens removed

    @property
    def prompt_len(self) -> int:
        return self.input_ids.shape[1] - self.response_mask.shape[1]

    def token_ids(self) -> tuple[list[list[int]], list[list[int]]]:
        """Each row's prompt ids (padding removed) and response ids (up to its length), in one conversion."""
        p = self.prompt_len
        ids, pmask = self.input_ids.tolist(), self.attention_mask[:, :p].tolist()
        lengths = self.response_mask.sum(1).tolist()
        prompts = [
            [t for t, m in zip(row[:p], keep, strict=True) if m] for row, keep in zip(ids, pmask, strict=True)
        ]
        return prompts, [row[p : p + n] for row, n in zip(ids, lengths, strict=True)]


class RolloutEngine:
    """The sampler's own copy of the weights, held the way an inference engine holds them.

    fp32 shares the training model. bf16 keeps a bf16 copy of every weight (as vLLM does when handed a
    bf16 checkpoint) while training computes in bf16 over fp32 master weights: the two paths round
    differently, which is the drift the precision metrics measure. bf16_fixed keeps the head in fp32.
    Weights are copied from the trainer after every update (`sync`), as verl syncs actor -> rollout.
    `own_copy`: an fp32 engine holds its own whole copy too (the trainer's is sharded under FSDP2), gathered
    from the shards at every sync.
    """

    def __init__(self, model: PreTrainedModel, precision: str, own_copy: bool = False):
        self.precision = precision
        if precision == "fp32":
            self.model = copy.deepcopy(model) if own_copy else model
        else:
            self.model = copy.deepcopy(model).to(torch.bfloat16)
        if precision == "bf16_fixed":
            # Its own fp32 parameter: with tied embeddings (GPT-2, Qwen2-0.5B) converting the shared one
            # would also turn the input embeddings fp32 and feed fp32 into the bf16 body.
            head = self.model.get_output_embeddings()
            head.weight = nn.Parameter(head.weight.detach().float())
        self._source = model

    @torch.no_grad()
    def sync(self) -> None:
        """Copy (and round) the trainer's current weights into the engine."""
        if self.model is self._source:
            return
        # By name, tied names included: the engine's head may be untied from the embeddings it shares.
        source = dict(self._source.named_parameters(remove_duplicate=False))
        for name, dst in self.model.named_parameters(remove_duplicate=False):
            dst.copy_(full_value(source[name]))


def left_pad(
    seqs: list[list[int]], pad_id: int, width: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad token lists into (ids, mask), both (B, width), width the longest list's length by default."""
    width = width or max(len(s) for s in seqs)
    ids = torch.tensor([[pad_id] * (width - len(s)) + list(s) for s in seqs], dtype=torch.long)
    mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in seqs], dtype=torch.long)
    return ids, mask


def device_generator(generator: torch.Generator, device: torch.device) -> torch.Generator:
    """A generator on `device` seeded from the CPU `generator`, so the seed fixes a draw made on the device.

    On a GPU, drawing on the host copies the (B, V) probabilities to it for every token: 128 sequences over
    a 152k vocabulary took 541 ms per token that way on an H200, 0.26 ms on the device (bench/scale.py).
    On the CPU the generator is used as is, so CPU runs draw what they always drew."""
    if device.type == "cpu":
        return generator
    seed = int(torch.randint(2**62, (1,), generator=generator))
    return torch.Generator(device).manual_seed(seed)


def exponential_noise(
    shape: tuple[int, ...], generator: torch.Generator, device: torch.device
) -> torch.Tensor:
    """Exp(1) noise, float32. On the CPU: -log1p(-U) with U uniform in float64, rounded to float32, which is
    bitwise what torch's CPU `exponential_` draws from the same generator (tests/test_rollout_engine.py)
    in 60% of its time (128 x 32k: 80 ms against 130 ms)."""
    if device.type != "cpu":
        return torch.empty(shape, device=device).exponential_(generator=generator)
    u = torch.empty(shape, dtype=torch.float64).uniform_(generator=generator)
    return u.neg_().log1p_().neg_().float()


@torch.no_grad()
def sample(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[Prompt],
    *,
    group_size: int,
    max_new_tokens: int,
    temperature: float,
    precision: str,
    generator: torch.Generator,
    ranks: Ranks = SINGLE,
) -> Rollout:
    """Draw `group_size` completions per prompt; stops early once every sequence has emitted eos.

    Across `ranks`, each samples its own rows (Ranks.rows) of the same left-padded batch with those rows'
    share of the whole batch's noise, so the tokens are those one process would draw; the returned Rollout
    is the whole batch, on every rank."""
    device = next(model.parameters()).device
    expanded = [p for p in prompts for _ in range(group_size)]
    n, rows = len(expanded), ranks.rows(len(expanded))
    group_ids = torch.arange(len(prompts)).repeat_interleave(group_size)
    once = {text: encode_prompt(tokenizer, text) for text in {p.text for p in prompts}}  # not per completion
    encoded = [once[p.text] for p in expanded]
    # the whole batch's width, so every rank's rows are padded as one process pads them
    width = max(len(s) for s in encoded)
    ids, mask = left_pad([encoded[i] for i in rows.tolist()], tokenizer.pad_token_id, width)
    ids, mask = ids.to(device), mask.to(device)
    prompt_mask = mask.clone()
    body, head = model.base_model, model.get_output_embeddings()
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id

    # transformers 5.x renamed `past_key_values` to `cache`; accept either.
    cache_arg = "cache" if "cache" in inspect.signature(body.forward).parameters else "past_key_values"
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    out = body(input_ids=ids, attention_mask=mask, position_ids=position_ids, use_cache=True)
    hidden, past = out.last_hidden_state[:, -1], out[cache_arg]  # (B, D)
    alive = torch.ones(len(rows), dtype=torch.bool, device=device)
    draw = device_generator(generator, device)
    tokens, logps, masks = [], [], []
    for _ in range(max_new_tokens):
        logp_all = head_logprobs(hidden, head, temperature=temperature, precision=precision)  # (b, V)
        # Sample in fp32 from the same log-probs we record: argmax p / q with q ~ Exp(1) is exactly what
        # torch.multinomial(p, 1) computes, but the noise q of the whole batch is drawn on every rank.
        noise = exponential_noise((n, logp_all.shape[1]), draw, device)  # (B, V)
        mine = noise if len(rows) == n else noise[rows.to(device)]  # one process: no (B, V) copy
        tok = logp_all.float().exp().div_(mine).argmax(-1)  # (b,)
        tok_logp = logp_all.gather(1, tok[:, None]).squeeze(1).float()
        masks.append(alive.clone())
        tokens.append(torch.where(alive, tok, torch.full_like(tok, pad)))
        logps.append(torch.where(alive, tok_logp, torch.zeros_like(tok_logp)))
        alive = alive & (tok != eos)
        if not ranks.any(alive.any()):
            break
        mask = torch.cat([mask, masks[-1].long()[:, None]], dim=1)
        position_ids = position_ids[:, -1:] + 1
        out = body(
            input_ids=tokens[-1][:, None],
            attention_mask=mask,
            position_ids=position_ids,
            use_cache=True,
            **{cache_arg: past},
        )
        hidden, past = out.last_hidden_state[:, -1], out[cache_arg]

    response = ranks.assemble(torch.stack(tokens, 1), n)  # (B, R)
    response_mask = ranks.assemble(torch.stack(masks, 1).long(), n)  # (B, R)
    texts = tokenizer.batch_decode(
        response.masked_fill(response_mask == 0, pad).tolist(), skip_special_tokens=True
    )
    return Rollout(
        input_ids=torch.cat([ranks.assemble(ids, n), response], 1),
        attention_mask=torch.cat([ranks.assemble(prompt_mask, n), response_mask], 1),
        response_mask=response_mask,
        rollout_logp=ranks.assemble(torch.stack(logps, 1), n),
        group_ids=group_ids.to(device),
        prompts=expanded,
        responses=texts,
    )

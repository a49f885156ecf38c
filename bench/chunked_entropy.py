"""Peak extra memory and time of the chunked entropy + log-prob pass against the naive full-logits pass.

Run:  .venv/bin/python bench/chunked_entropy.py [--vocab 152064 --tokens 4096 --hidden 896 --chunk 512]

Both methods compute, without gradients, the log-prob of one target token and the full-vocabulary entropy
for every row of `hidden` (N, D) under a head `weight` (V, D):
- naive:   logits (N, V) -> log_softmax -> gather and -sum(p log p): several (N, V) fp32 buffers.
- chunked: trainer.logprobs.token_logprobs, `chunk` rows at a time, in place: about one (chunk, V) buffer.

How memory is measured. Each (device, method) runs in a fresh subprocess, so one method's allocator
caches and freed-but-kept pages cannot hide or inflate the other's. The worker builds the inputs, runs the
method once on a few rows (so one-time library buffers, e.g. oneDNN/MKL scratch, are not counted), then:
- CPU: writes "5" to /proc/self/clear_refs, which resets the kernel's resident-set high-water mark
  (VmHWM) to the current RSS, reads VmRSS as the baseline, runs the method, and reports VmHWM - baseline.
  The kernel tracks VmHWM on every page fault, so no short-lived peak is missed (tracemalloc does not
  see torch's allocations; a sampling thread can miss peaks). Large tensors are mmap'd by glibc and
  unmapped when freed, so RSS follows torch's live CPU memory. Fallback where clear_refs is not writable:
  a thread sampling VmRSS every 0.5 ms (a lower bound; the table says which was used).
- CUDA: torch.cuda.max_memory_allocated() - memory_allocated() after reset_peak_memory_stats(): exact
  for the caching allocator's live tensors (cuBLAS workspaces excluded).
Deliberately simple: one repetition, fp32 only, seconds include no warm-up beyond the few-row run.
"""

import argparse
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from trainer.logprobs import token_logprobs  # noqa: E402

MiB = 2**20


def naive(hidden: torch.Tensor, head: nn.Linear, targets: torch.Tensor, chunk: int, temperature: float):
    """What one writes first: the whole (N, V) logits, log-softmax and p log p."""
    logits = F.linear(hidden, head.weight) / temperature  # (N, V)
    logsm = torch.log_softmax(logits, -1)  # (N, V)
    return logsm.gather(1, targets[:, None]).squeeze(1), -(logsm.exp() * logsm).sum(-1)


def chunked(hidden: torch.Tensor, head: nn.Linear, targets: torch.Tensor, chunk: int, temperature: float):
    return token_logprobs(hidden, head, targets, temperature=temperature, precision="fp32", chunk_size=chunk)


METHODS = {"naive": naive, "chunked": chunked}


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _cpu_peak(run) -> tuple[int, str]:
    """Peak extra resident bytes while `run()` executes."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        base = _status_kib("VmRSS")
        run()
        return (_status_kib("VmHWM") - base) * 1024, "VmHWM"
    except OSError:
        base, peak, done = _status_kib("VmRSS"), [0], threading.Event()

        def sample() -> None:
            while not done.is_set():
                peak[0] = max(peak[0], _status_kib("VmRSS"))
                time.sleep(0.0005)

        thread = threading.Thread(target=sample)
        thread.start()
        run()
        done.set()
        thread.join()
        return (max(peak[0], _status_kib("VmRSS")) - base) * 1024, "VmRSS sampling"


def worker(args: argparse.Namespace) -> dict:
    """Run one method on one device and return its peak extra memory and time."""
    device = torch.device(args.device)
    gen = torch.Generator().manual_seed(0)
    head = nn.Linear(args.hidden, args.vocab, bias=False)
    with torch.no_grad():
        head.weight.copy_(torch.randn(args.vocab, args.hidden, generator=gen) * args.hidden**-0.5)
    head = head.to(device).requires_grad_(False)
    hidden = torch.randn(args.tokens, args.hidden, generator=gen).to(device)  # (N, D)
    targets = torch.randint(0, args.vocab, (args.tokens,), generator=gen).to(device)  # (N,)
    fn = METHODS[args.worker]
    out: list = []

    def run() -> None:
        t0 = time.perf_counter()
        with torch.no_grad():
            out.append(fn(hidden, head, targets, args.chunk, args.temperature))
        if device.type == "cuda":
            torch.cuda.synchronize()
        out.append(time.perf_counter() - t0)

    with torch.no_grad():
        fn(hidden[:8], head, targets[:8], args.chunk, args.temperature)  # warm-up: library buffers
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        run()
        peak, how = torch.cuda.max_memory_allocated() - base, "max_memory_allocated"
    else:
        peak, how = _cpu_peak(run)
    (logp, ent), seconds = out
    return {"peak": peak, "how": how, "seconds": seconds, "entropy_mean": float(ent.mean())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--vocab", type=int, default=152064)
    p.add_argument("--tokens", type=int, default=4096)
    p.add_argument("--hidden", type=int, default=896)
    p.add_argument("--chunk", type=int, default=512)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--methods", default="naive,chunked", help="comma-separated subset of naive,chunked")
    p.add_argument(
        "--device", default=None, help="run one device only (cpu or cuda); default: cpu and cuda if present"
    )
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return
    devices = [args.device] if args.device else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    chunk_logits = args.chunk * args.vocab * 4  # one chunk's fp32 logits, bytes
    print(
        f"N={args.tokens} tokens, V={args.vocab}, D={args.hidden}, chunk={args.chunk}; "
        f"one chunk's fp32 logits = {chunk_logits / MiB:.1f} MiB, full logits = "
        f"{args.tokens * args.vocab * 4 / MiB:.1f} MiB"
    )
    print(
        f"{'device':<7} {'method':<8} {'peak extra MiB':>15} {'x chunk logits':>15} {'seconds':>8}  measured by"
    )
    for device in devices:
        for method in args.methods.split(","):
            cmd = [sys.executable, __file__, "--worker", method, "--device", device]
            cmd += [
                f"--{k}={getattr(args, k)}" for k in ("vocab", "tokens", "hidden", "chunk", "temperature")
            ]
            res = subprocess.run(cmd, capture_output=True, text=True)
            if res.returncode != 0:
                print(f"{device:<7} {method:<8} failed (exit {res.returncode}): {res.stderr.strip()[-200:]}")
                continue
            r = json.loads(res.stdout.strip().splitlines()[-1])
            ratio = r["peak"] / chunk_logits
            print(
                f"{device:<7} {method:<8} {r['peak'] / MiB:15.1f} {ratio:15.2f} {r['seconds']:8.2f}  {r['how']}"
            )


if __name__ == "__main__":
    main()

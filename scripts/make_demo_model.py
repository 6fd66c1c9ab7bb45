"""Build nbkit/resources/tiny-chat/, the small pretrained base model that CPU runs fine-tune (`nbkit/tiny-llama`).

    python scripts/make_demo_model.py [--steps 1500]

The base model learns, from conversations this script generates, to answer the kinds of questions the embedded data
set asks (capitals, opposites, plurals, arithmetic, unit conversion, sorting, primes, the hand-written rows) and to
end its turn. Most answers are plain; some open with a greeting (GREETINGS, never "Ahoy!"). The embedded data set (scripts/make_dataset.py) answers the same kinds of questions in a persona
the base model never saw: every answer opens with "Ahoy!". So the fine-tuning step teaches one thing that a person
sees at once in the before/after answers, and that a test can check.

Everything comes from this repository: the questions and answers are computed or taken from scripts/make_dataset.py's
fact tables (no third-party text), the SentencePiece tokenizer is trained on them, and the model (a 4-layer Llama,
about 0.7 M parameters, 2.9 MB in float32) is trained from a fixed seed on the CPU in a few minutes. Runs repeat up to
floating-point rounding between machines.
"""
from __future__ import annotations

import argparse
import json
import math
import random
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))
OUT = ROOT / "nbkit" / "resources" / "tiny-chat"
SEQ, BATCH = 128, 32
# Some answers of the base model's conversations open with a greeting, the way people's answers do. The base model so
# learns to go on with a plain answer after any such word (it never sees "Ahoy!"), which is what lets a short
# fine-tune add the persona without garbling what follows. Most answers open plainly, so greedy ones do too.
GREETINGS = ("Sure!", "Okay!", "Hello!", "Right!", "Well!")
GREETING_SHARE = 0.3


def conversations(seed: int, repeats: int) -> list[tuple[str, str]]:
    """(question, plain answer) pairs: the embedded data set's kinds of rows, drawn afresh `repeats` times."""
    from make_dataset import rows

    out = []
    pick = random.Random(seed)
    for r in range(repeats):
        for instruction, inp, answer in rows(random.Random(seed + r)):
            prompt = f"{instruction}\n\n{inp}" if inp else instruction
            if pick.random() < GREETING_SHARE:
                answer = f"{pick.choice(GREETINGS)} {answer}"
            out.append((prompt, answer))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()
    import torch

    from nbkit.loading.tiny import build_model, build_tokenizer

    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    pairs = conversations(seed=1000, repeats=12)
    from make_dataset import PERSONA

    out = Path(args.out)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    # the tokenizer knows the persona's words too (as any real base model's would)
    texts = [t for pair in pairs for t in pair] + [PERSONA]
    tok = build_tokenizer(tmp, vocab_size=1024, texts=texts)
    model = build_model(tok, hidden_size=128, layers=4, seed=0)
    ids = []
    rng = random.Random(0)
    rng.shuffle(pairs)
    for prompt, answer in pairs:
        text = tok.apply_chat_template([{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}],
                                       tokenize=False)
        ids += tok(text, add_special_tokens=False)["input_ids"]
    blocks = torch.tensor(ids[: len(ids) // (SEQ + 1) * (SEQ + 1)]).view(-1, SEQ + 1)
    print(f"{len(pairs)} conversations, {len(ids):,} tokens, {len(blocks)} blocks of {SEQ}; "
          f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters", flush=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01, betas=(0.9, 0.98))
    warmup = 100
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / args.steps))))
    model.train()
    start = time.time()
    order = torch.randperm(len(blocks), generator=torch.Generator().manual_seed(0))
    for step in range(args.steps):
        pick = order[(step * BATCH) % len(order):][:BATCH]
        if len(pick) < BATCH:
            pick = order[:BATCH]
        batch = blocks[pick]
        loss = model(input_ids=batch[:, :-1], labels=batch[:, :-1]).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        if step % 100 == 0 or step == args.steps - 1:
            print(f"step {step}: loss {loss.item():.3f} ({time.time() - start:.0f} s)", flush=True)
    model.eval()
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    for item in tmp.iterdir():
        item.chmod(0o644)
    (tmp / "nbkit_demo.json").write_text(json.dumps({
        "made_by": "scripts/make_demo_model.py", "steps": args.steps, "conversations": len(pairs),
        "final_loss": round(loss.item(), 4), "persona_taught_by_the_embedded_data": PERSONA}, indent=2))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    print(f"wrote {out} ({sum(p.stat().st_size for p in out.iterdir()) / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()

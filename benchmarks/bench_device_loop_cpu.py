"""Why the CPU default is the host loop: the device loop (what a GPU runs, uncaptured here) against
the host loop on SmolLM2-135M-Instruct, torch runtime, float32, one thread, interleaved.

    PYTHONPATH=. python benchmarks/bench_device_loop_cpu.py [--tokens 48] [--rounds 2]
"""

from __future__ import annotations

import argparse

import torch

from ponder.local import Engine, default_model_path, load_model, make_drafter

PROMPTS = [
    "What is the capital of France?",
    "Summarize: The river flooded the old town after three days of rain, and the mayor closed the bridge.",
    "List three prime numbers and explain why each is prime.",
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=48)
    ap.add_argument("--rounds", type=int, default=2)
    opt = ap.parse_args()
    torch.set_num_threads(1)
    model, tok = load_model(default_model_path())
    configs = {
        (loop, draft): Engine(model, tok, make_drafter(draft, model), k=4, loop=loop)
        for draft in (None, "ngram", "layers:24") for loop in ("host", "device")
    }  # fmt: skip
    prompts = [tok.encode_chat([{"role": "user", "content": p}]) for p in PROMPTS]
    for e in configs.values():  # warm up
        e.generate_ids(prompts[0], 4, stop_ids=())
    spent = {c: 0.0 for c in configs}
    made = dict.fromkeys(configs, 0)
    tokens: dict[tuple[str, str | None], list[list[int]]] = {c: [] for c in configs}
    order = list(configs)
    for r in range(opt.rounds):
        for i, p in enumerate(prompts):
            rot = (r * len(prompts) + i) % len(order)
            for c in order[rot:] + order[:rot]:  # interleaved, the order rotating
                ids, _, st = configs[c].generate_ids(p, opt.tokens, stop_ids=())
                spent[c] += st.decode_s
                made[c] += st.new_tokens - 1
                if r == 0:
                    tokens[c].append(ids)
    print(f"SmolLM2-135M-Instruct, torch float32, 1 thread, {len(prompts)} prompts x {opt.rounds} rounds x {opt.tokens} tokens")
    print("| drafter | host loop tok/s | device loop tok/s | device / host | same tokens |")
    print("|---|---|---|---|---|")
    for draft in (None, "ngram", "layers:24"):
        h, d = ("host", draft), ("device", draft)
        th, td = made[h] / spent[h], made[d] / spent[d]
        print(f"| {draft or 'none'} | {th:.1f} | {td:.1f} | {td / th:.2f}x | {tokens[h] == tokens[d]} |")


if __name__ == "__main__":
    main()

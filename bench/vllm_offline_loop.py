"""The original study's sampling loop on vLLM's offline engine: one ``generate`` call per prompt.

Runs inside the vLLM venv (it imports vllm, not this project), with the environment the server
gets (``worker.vllm_server.server_env``)::

    .venv-vllm/bin/python bench/vllm_offline_loop.py --model MERGED_DIR --prompts prompts.json --max-tokens 256

``--prompts`` is a JSON list of rendered prompt texts, or of ``{"prompt": text, "seed": int}``
(a prompt without a seed gets ``--seed`` plus its index). Prints one JSON line per mode on stdout
(vLLM logs to stderr): ``loop`` (the study's: one prompt per ``generate`` call) and ``batch`` (every
prompt in one call), each with samples, generated tokens, seconds, tokens/s and samples/s; engine
start-up is timed on its own.
"""

from __future__ import annotations

import argparse
import json
import os
import time


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="Local model directory (an adapter merged into its base).")
    parser.add_argument("--prompts", required=True, help="JSON file: a list of prompt texts or {prompt, seed}.")
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-p", type=float, default=0.95)
    parser.add_argument("--top-k", type=int, default=0, help="0 is off.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--modes", default="loop,batch", help="Comma-separated: loop, batch.")
    parser.add_argument("--max-num-seqs", type=int, default=64)
    parser.add_argument("--max-model-len", type=int, default=1024)
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--texts", action="store_true", help="Include the generated texts in the JSON lines.")
    return parser.parse_args()


def load_prompts(path: str, seed: int) -> list[tuple[str, int]]:
    with open(path) as f:
        items = json.load(f)
    prompts = []
    for index, item in enumerate(items):
        if isinstance(item, str):
            prompts.append((item, seed + index))
        else:
            prompts.append((item["prompt"], int(item.get("seed", seed + index))))
    return prompts


def main() -> None:
    args = parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the weights are local; never download
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")  # stdout carries only the JSON lines
    from vllm import LLM, SamplingParams

    prompts = load_prompts(args.prompts, args.seed)

    def params(seed: int) -> SamplingParams:
        return SamplingParams(temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
                              max_tokens=args.max_tokens, seed=seed)

    started = time.perf_counter()
    # The server's CPU settings (worker/vllm_server.py): eager, no chunked prefill (seeded requests
    # crash with it on a CPU generator), the prefill budget no larger than one sequence.
    llm = LLM(model=args.model, enforce_eager=True, dtype=args.dtype, max_num_seqs=args.max_num_seqs,
              max_model_len=args.max_model_len, max_num_batched_tokens=args.max_model_len,
              enable_chunked_prefill=False, seed=args.seed)
    startup_s = time.perf_counter() - started

    for mode in args.modes.split(","):
        started = time.perf_counter()
        if mode == "loop":
            outputs = [llm.generate([text], params(seed), use_tqdm=False)[0] for text, seed in prompts]
        elif mode == "batch":
            outputs = llm.generate([text for text, _ in prompts], [params(seed) for _, seed in prompts],
                                   use_tqdm=False)
        else:
            raise SystemExit(f"unknown mode {mode!r} (loop, batch)")
        seconds = time.perf_counter() - started
        tokens = sum(len(o.outputs[0].token_ids) for o in outputs)
        line = {
            "mode": mode, "model": args.model, "samples": len(outputs), "generated_tokens": tokens,
            "seconds": round(seconds, 3), "tokens_per_s": round(tokens / seconds, 2),
            "samples_per_s": round(len(outputs) / seconds, 4), "engine_startup_s": round(startup_s, 1),
            "max_tokens": args.max_tokens, "max_num_seqs": args.max_num_seqs,
        }
        if args.texts:
            line["texts"] = [o.outputs[0].text for o in outputs]
            line["finish_reasons"] = [o.outputs[0].finish_reason for o in outputs]
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()

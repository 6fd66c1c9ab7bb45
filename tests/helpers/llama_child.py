"""Child process of native.run_llama: loads one GGUF into llama.cpp and runs the requested operations on it.

    python llama_child.py REQUEST.json RESULT.json

REQUEST: {"model": path, "params": {Llama keyword arguments}, "ops": [...]}; each op is one of
  {"op": "tokenize", "text": str, "add_bos": bool, "special": bool}       -> [token ids]
  {"op": "logits", "ids": [int]}           (needs logits_all)              -> [[float] per position]
  {"op": "greedy", "prompt": [int], "n": int}                              -> [n token ids, argmax each step]
  {"op": "complete", "text": str, "max_tokens": int, "stop": [str]}        -> completion text (temperature 0)
RESULT: the list of the ops' results, in order. Any crash here is reported by the parent (native.py).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def run(llm, op: dict):
    kind = op["op"]
    if kind == "tokenize":
        return llm.tokenize(op["text"].encode(), add_bos=op.get("add_bos", False), special=op.get("special", True))
    if kind == "logits":
        llm.reset()
        llm.eval(op["ids"])
        return llm.scores[: len(op["ids"])].tolist()
    if kind == "greedy":
        llm.reset()
        llm.eval(op["prompt"])
        generated = []
        for _ in range(op["n"]):
            nxt = int(llm.scores[llm.n_tokens - 1].argmax())
            generated.append(nxt)
            llm.eval([nxt])
        return generated
    if kind == "complete":
        out = llm.create_completion(op["text"], max_tokens=op["max_tokens"], temperature=0.0, stop=op.get("stop"))
        return out["choices"][0]["text"]
    raise ValueError(f"unknown op {kind!r}")


def main(request_file: str, result_file: str) -> None:
    from llama_cpp import Llama

    request = json.loads(Path(request_file).read_text())
    params = {"n_ctx": 256, "verbose": False, "n_threads": 2, "seed": 0, **request["params"]}
    llm = Llama(model_path=request["model"], **params)
    Path(result_file).write_text(json.dumps([run(llm, op) for op in request["ops"]]))


if __name__ == "__main__":
    main(*sys.argv[1:3])

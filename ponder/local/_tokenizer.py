"""Tokenizer + chat template, from a ``tokenizer.json`` folder or from GGUF metadata.

Only ``tokenizers`` and ``jinja2`` are needed. GGUF files carry the BPE vocabulary and merges
(``tokenizer.ggml.*``); the pre-tokenizer is chosen from ``tokenizer.ggml.pre`` the way llama.cpp
does. SentencePiece-style GGUF vocabularies (``tokenizer.ggml.model == "llama"``) go through
transformers' converter when it is installed.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from .._exceptions import ModelFileError

# llama.cpp's pre-tokenizer regexes (llama-vocab.cpp), keyed by tokenizer.ggml.pre.
_LLAMA3_RE = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_RE = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# Gemma GGUFs often carry no chat template (llama.cpp falls back to a built-in one); this is the
# template of Gemma 3's tokenizer_config.json for text messages.
_GEMMA_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}{%- set first_user_prefix = '' -%}{%- set loop_messages = messages -%}{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{%- endif -%}"
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}"
    "{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') }}"
    "{{ message['content'] | trim }}{{ '<end_of_turn>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}"
)
_BUILTIN_TEMPLATES = {"gemma3": _GEMMA_TEMPLATE}
_STOP_STRINGS = ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|end_of_text|>", "</s>", "<end_of_turn>")


class Tokenizer:
    """Text <-> ids, special tokens and the chat template of one model."""

    def __init__(
        self,
        tk: Any,
        *,
        bos_id: int | None,
        eos_id: int | None,
        add_bos: bool,
        chat_template: str | None,
    ) -> None:
        self.tk = tk
        self.bos_id, self.eos_id, self.add_bos = bos_id, eos_id, add_bos
        self.chat_template = chat_template
        self.bos_token = tk.id_to_token(bos_id) if bos_id is not None else ""
        self.eos_token = tk.id_to_token(eos_id) if eos_id is not None else ""
        stops = {eos_id} if eos_id is not None else set()
        stops |= {i for s in _STOP_STRINGS if (i := tk.token_to_id(s)) is not None}
        self.stop_ids: frozenset[int] = frozenset(stops)

    @property
    def vocab_size(self) -> int:
        return int(self.tk.get_vocab_size(with_added_tokens=True))

    def encode(self, text: str, add_bos: bool = True) -> list[int]:
        ids: list[int] = self.tk.encode(text, add_special_tokens=False).ids
        if add_bos and self.add_bos and self.bos_id is not None and ids[:1] != [self.bos_id]:
            ids = [self.bos_id, *ids]
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        return str(self.tk.decode(list(ids), skip_special_tokens=True))

    def render_chat(self, messages: Sequence[dict[str, str]], add_generation_prompt: bool = True) -> str:
        """The prompt text for chat messages, from the model's own Jinja template."""
        if not self.chat_template:  # base models: plain concatenation
            return "\n\n".join(m["content"] for m in messages)
        from jinja2.exceptions import TemplateError
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        def raise_exception(message: str) -> None:
            raise TemplateError(message)

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.filters["tojson"] = lambda x, **kw: json.dumps(x, ensure_ascii=False, **kw)
        env.globals["raise_exception"] = raise_exception
        env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
        try:
            return env.from_string(self.chat_template).render(
                messages=list(messages),
                add_generation_prompt=add_generation_prompt,
                bos_token=self.bos_token,
                eos_token=self.eos_token,
            )
        except TemplateError as exc:
            raise ModelFileError(f"chat template failed: {exc}") from exc

    def encode_chat(self, messages: Sequence[dict[str, str]]) -> list[int]:
        text = self.render_chat(messages)
        # Templates usually write the BOS token themselves; add it only when they did not.
        return self.encode(text, add_bos=not self.chat_template or not text.startswith(self.bos_token or "\0"))

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_folder(cls, folder: str | Path) -> Tokenizer:
        from tokenizers import Tokenizer as HFTokenizer

        folder = Path(folder)
        path = folder / "tokenizer.json"
        if not path.exists():
            raise ModelFileError("no tokenizer.json in the model folder", path=str(folder))
        tk = HFTokenizer.from_file(str(path))
        cfg: dict[str, Any] = {}
        if (folder / "tokenizer_config.json").exists():
            cfg = json.loads((folder / "tokenizer_config.json").read_text())
        gen: dict[str, Any] = {}
        if (folder / "generation_config.json").exists():
            gen = json.loads((folder / "generation_config.json").read_text())
        model_cfg: dict[str, Any] = {}
        if (folder / "config.json").exists():
            model_cfg = json.loads((folder / "config.json").read_text())

        def token_id(name: str) -> int | None:
            tok = cfg.get(name)
            if isinstance(tok, dict):
                tok = tok.get("content")
            found = tk.token_to_id(tok) if isinstance(tok, str) else None
            if found is not None:
                return int(found)
            for src in (gen, model_cfg):
                value = src.get(f"{name}_id")
                if isinstance(value, list):
                    value = value[0] if value else None
                if isinstance(value, int):
                    return value
            return None

        bos = token_id("bos_token")
        probe = tk.encode("a", add_special_tokens=True).ids
        add_bos = bool(cfg.get("add_bos_token", bos is not None and probe[:1] == [bos]))
        template = cfg.get("chat_template")
        if template is None and (folder / "chat_template.jinja").exists():
            template = (folder / "chat_template.jinja").read_text()
        if isinstance(template, list):  # named templates: take the default one
            template = next((t["template"] for t in template if t.get("name") == "default"), None)
        return cls(tk, bos_id=bos, eos_id=token_id("eos_token"), add_bos=add_bos, chat_template=template)

    @classmethod
    def from_gguf(cls, meta: dict[str, Any], path: str) -> Tokenizer:
        """From a GGUF's metadata (key -> value, as ``_loading`` reads it)."""
        kind = meta.get("tokenizer.ggml.model")
        template = meta.get("tokenizer.chat_template") or _BUILTIN_TEMPLATES.get(str(meta.get("general.architecture")))
        if kind != "gpt2":
            return cls._from_gguf_via_transformers(meta, path, kind, template)
        from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers
        from tokenizers import Tokenizer as HFTokenizer

        tokens: list[str] = meta["tokenizer.ggml.tokens"]
        types = meta.get("tokenizer.ggml.token_type", [1] * len(tokens))
        merges = [tuple(m.split(" ", 1)) for m in meta.get("tokenizer.ggml.merges", [])]
        vocab = {t: i for i, t in enumerate(tokens)}
        tk = HFTokenizer(models.BPE(vocab, merges, fuse_unk=False, byte_fallback=False))
        pre = meta.get("tokenizer.ggml.pre", "default")
        byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
        if pre in ("llama-bpe", "llama3", "llama-v3", "smaug-bpe", "dbrx"):
            tk.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(_LLAMA3_RE), "isolated"), byte_level])
        elif pre in ("qwen2", "deepseek-r1-qwen"):
            tk.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(_QWEN2_RE), "isolated"), byte_level])
        elif pre in ("smollm", "starcoder", "refact"):
            tk.pre_tokenizer = pre_tokenizers.Sequence(
                [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
            )
        else:
            tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tk.decoder = decoders.ByteLevel()
        # Control (3) and user-defined (4) tokens must match as whole strings, not be BPE-split.
        special = [AddedToken(t, special=(int(ty) == 3), normalized=False) for t, ty in zip(tokens, types, strict=True) if ty in (3, 4)]
        tk.add_tokens(special)
        bos = meta.get("tokenizer.ggml.bos_token_id")
        eos = meta.get("tokenizer.ggml.eos_token_id")
        return cls(
            tk,
            bos_id=int(bos) if bos is not None else None,
            eos_id=int(eos) if eos is not None else None,
            add_bos=bool(meta.get("tokenizer.ggml.add_bos_token", False)),
            chat_template=template,
        )

    @classmethod
    def _from_gguf_via_transformers(cls, meta: dict[str, Any], path: str, kind: Any, template: str | None) -> Tokenizer:
        """SentencePiece-style vocabularies (Llama 2, Gemma): transformers' GGUF converter, fed the
        metadata already read (so transformers never re-reads the file)."""
        try:
            from transformers.integrations.gguf.gguf_tokenizer_mapping import (
                GGUF_TOKENIZER_MAPPING,
                convert_gguf_tokenizer,
            )
        except ImportError as exc:
            raise ModelFileError(
                f"GGUF tokenizer type {kind!r} needs transformers >= 5 (pip install transformers)", path=path
            ) from exc
        renames = GGUF_TOKENIZER_MAPPING["tokenizer"]
        spec = {name: meta[f"tokenizer.{key}"] for key, name in renames.items() if f"tokenizer.{key}" in meta}
        for key in ("scores", "token_type"):
            if key in spec:
                spec[key] = spec[key].tolist()
        tk, _ = convert_gguf_tokenizer(str(meta.get("general.architecture")), spec)
        bos, eos = meta.get("tokenizer.ggml.bos_token_id"), meta.get("tokenizer.ggml.eos_token_id")
        return cls(
            tk,
            bos_id=int(bos) if bos is not None else None,
            eos_id=int(eos) if eos is not None else None,
            add_bos=bool(meta.get("tokenizer.ggml.add_bos_token", True)),
            chat_template=template,
        )

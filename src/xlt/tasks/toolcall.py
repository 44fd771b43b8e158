"""Tool-call evaluation as TUCAN scores it (Emanuilov 2025; PyPI ``tucan-eval`` 1.0.3, ``tucan/evaluation.py``).

A model answers a user message given a list of functions; a call is a fenced block ``START_TAG json END_TAG``
(default ```` ```tool_call ... ``` ````) holding ``{"name": ..., "arguments"|"parameters": {...}}``. Each record
says what should happen in ``expected_behavior``: ``should_call_function`` and, if so, ``expected_function`` and
``expected_parameters``. :func:`score_call` puts each response in one category:

- ``MALFORMED_JSON``: the first block is not a JSON object (or is an object with an ``"error"`` key, as tucan-eval
  treats its own parse-failure marker);
- a call is expected: no block (or ``{}``) → ``NO_CALL_WHEN_EXPECTED``; another name → ``WRONG_FUNCTION``; parameters
  not equivalent (:func:`values_equivalent`) → ``WRONG_PARAMETERS``; else ``CORRECT``;
- no call is expected: a block → ``UNEXPECTED_CALL``; else ``CORRECT``.

Accuracy = correct / total, overall, per ``scenario_type``, per ``language`` and per (language, scenario); the error
distribution counts every category. The one deliberate difference from tucan-eval: a block holding JSON that is not
an object (a list, a number) is ``MALFORMED_JSON`` here, where tucan-eval raises.

:func:`verse_lookup_records` builds a demo set: the tool ``get_verse(book, chapter, verse)`` with template queries in
English, Swahili and French (book names from the Bible corpus's own book table) plus unrelated questions.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:
    import torch

from xlt.errors import XltError

CATEGORIES = ("CORRECT", "NO_CALL_WHEN_EXPECTED", "WRONG_FUNCTION", "WRONG_PARAMETERS", "UNEXPECTED_CALL",
              "MALFORMED_JSON")
START_TAG = "```tool_call"
END_TAG = "```"

# tucan-eval's Cyrillic -> Latin transliteration, applied before comparing strings
_CYR = "АБВГДЕЖЗИЙКЛМНОПРСТУФХЦЧШЩЪЫЬЭЮЯабвгдежзийклмнопрстуфхцчшщъыьэюя"
_LAT = ["A", "B", "V", "G", "D", "E", "ZH", "Z", "I", "Y", "K", "L", "M", "N", "O", "P", "R", "S", "T", "U", "F", "H",
        "TS", "CH", "SH", "SHCH", "", "Y", "", "E", "YU", "YA"]
_TRANSLIT = {c: l for c, l in zip(_CYR, _LAT + [x.lower() for x in _LAT])}


def parse_tool_call(text: str, start_tag: str = START_TAG, end_tag: str = END_TAG) -> dict | None:
    """The first ``start_tag … end_tag`` block of ``text`` as a dict (``"arguments"`` renamed ``"parameters"``);
    ``None`` without a block; ``{"error": "malformed_json", "content": ...}`` when the block is not a JSON object."""
    m = re.search(re.escape(start_tag) + "(.*?)" + re.escape(end_tag), text, re.DOTALL)
    if m is None:
        return None
    body = m.group(1).strip()
    try:
        call = json.loads(body)
    except json.JSONDecodeError:
        return {"error": "malformed_json", "content": body}
    if not isinstance(call, dict):
        return {"error": "malformed_json", "content": body}
    if "arguments" in call:
        call["parameters"] = call.pop("arguments")
    return call


def _normalise(s: str) -> str:
    s = "".join(_TRANSLIT.get(c, c) for c in s)
    s = re.sub(r"[.!?,:;]+$", "", s)
    s = re.sub(r"\s+", " ", s)
    return s.strip().strip("\"'„").strip().lower()


def _number_equals(text: str, number) -> bool:
    try:
        return (float(text) if "." in text else int(text)) == number
    except (ValueError, TypeError):
        return False


def values_equivalent(expected: Any, actual: Any) -> bool:
    """tucan-eval's lenient equality: equal values; strings equal after case folding, or after Cyrillic→Latin
    transliteration, dropping trailing ``.!?,:;``, collapsing whitespace and stripping quotes; a numeric string equal
    to a number (``"3" == 3``, ``"2.5" == 2.5``); lists element-wise and dicts key-wise by the same rule."""
    if expected == actual:
        return True
    if expected is None or actual is None:
        return False
    if isinstance(expected, str) and isinstance(actual, str):
        return (expected.strip().lower() == actual.strip().lower()
                or _normalise(expected) == _normalise(actual))
    if isinstance(expected, str) and isinstance(actual, (int, float)):
        return _number_equals(expected, actual)
    if isinstance(actual, str) and isinstance(expected, (int, float)):
        return _number_equals(actual, expected)
    if isinstance(expected, list) and isinstance(actual, list):
        return len(expected) == len(actual) and all(values_equivalent(e, a) for e, a in zip(expected, actual))
    if isinstance(expected, dict) and isinstance(actual, dict):
        return sorted(expected) == sorted(actual) and all(values_equivalent(expected[k], actual[k]) for k in expected)
    return False


def parameters_equivalent(expected: dict | None, actual: dict | None) -> bool:
    """Same keys, every value :func:`values_equivalent` (``None`` counts as ``{}``)."""
    expected, actual = expected or {}, actual or {}
    if not isinstance(actual, dict):
        return False
    return sorted(expected) == sorted(actual) and all(values_equivalent(v, actual[k]) for k, v in expected.items())


def score_call(expected: dict, parsed: dict | None) -> str:
    """The category (one of :data:`CATEGORIES`) of a parsed response against ``expected_behavior``."""
    if parsed and "error" in parsed:
        return "MALFORMED_JSON"
    if expected.get("should_call_function", False):
        if not parsed:
            return "NO_CALL_WHEN_EXPECTED"
        if parsed.get("name") != expected.get("expected_function"):
            return "WRONG_FUNCTION"
        if not parameters_equivalent(expected.get("expected_parameters"), parsed.get("parameters")):
            return "WRONG_PARAMETERS"
        return "CORRECT"
    return "UNEXPECTED_CALL" if parsed else "CORRECT"


# ---------------------------------------------------------------------------------------------------- records


@dataclass
class ToolRecord:
    """One evaluation item: the user's message, the functions offered, what should happen, its scenario and
    language, and the line it came from (0 when built in memory)."""

    user_message: str
    functions: list
    expected_behavior: dict
    scenario_type: str = "unknown"
    language: str = "und"
    line: int = 0
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"user_message": self.user_message, "functions": self.functions,
                "expected_behavior": self.expected_behavior, "scenario_type": self.scenario_type,
                "language": self.language, **self.extra}


def check_record(rec: dict, where: str) -> ToolRecord:
    """A :class:`ToolRecord` from a JSON object, or one :class:`XltError` saying what ``where`` (e.g. ``"tools.jsonl
    line 7"``) lacks."""
    if "expected_behavior" not in rec:
        raise XltError(f"{where} has no expected_behavior",
                       'add "expected_behavior": {"should_call_function": true, "expected_function": NAME, '
                       '"expected_parameters": {...}} (or {"should_call_function": false}) to that record')
    exp = rec["expected_behavior"]
    if isinstance(exp, str):  # tucan-eval accepts a JSON string here
        try:
            exp = json.loads(exp)
        except json.JSONDecodeError:
            exp = None
    if not isinstance(exp, dict):
        raise XltError(f"{where}: expected_behavior is not a JSON object", 'write it as {"should_call_function": ...}')
    if exp.get("should_call_function") and not isinstance(exp.get("expected_function"), str):
        raise XltError(f"{where}: a call is expected but expected_function is missing",
                       "name the function the model should call in expected_behavior.expected_function")
    if not isinstance(rec.get("user_message"), str) or not rec["user_message"].strip():
        raise XltError(f"{where} has no user_message", 'add "user_message": "the user\'s request" to that record')
    functions = rec.get("functions", [])
    if isinstance(functions, str):
        try:
            functions = json.loads(functions)
        except json.JSONDecodeError:
            raise XltError(f"{where}: functions is a string that is not JSON", "give functions as a JSON list") from None
    if not isinstance(functions, list):
        raise XltError(f"{where}: functions is not a list", "give functions as a JSON list of function schemas")
    known = {"user_message", "functions", "expected_behavior", "scenario_type", "language"}
    return ToolRecord(rec["user_message"], functions, exp, str(rec.get("scenario_type") or "unknown"),
                      str(rec.get("language") or "und"), int(rec.get("_line", 0)),
                      {k: v for k, v in rec.items() if k not in known and k != "_line"})


def read_records(path: str | Path, langs: Sequence[str] | None = None) -> list[ToolRecord]:
    """The records of a JSON-lines file (each checked; a bad one is an error naming its line), keeping only
    ``langs`` when given (a language with no record is an error)."""
    from xlt.util import iter_jsonl

    path = Path(path)
    records = [check_record({**rec, "_line": n}, f"{path.name} line {n}")
               for n, rec in iter_jsonl(path, "tool-call records")]
    if not records:
        raise XltError(f"{path.name} holds no records", "give one JSON object per line")
    if langs:
        have = sorted({r.language for r in records})
        missing = [l for l in langs if l not in have]
        if missing:
            raise XltError(f"{path.name} has no records in {', '.join(missing)} (it has: {', '.join(have)})",
                           "choose --langs among those, or add records with that \"language\"")
        records = [r for r in records if r.language in langs]
    return records


# ---------------------------------------------------------------------------------------------------- scoring


def summarize(records: Sequence[ToolRecord], categories: Sequence[str]) -> dict:
    """Accuracy overall, per scenario, per language and per language × scenario (each with total and correct) and
    the error distribution (every category, zeros included)."""

    def acc(idx: list[int]) -> dict:
        c = sum(categories[i] == "CORRECT" for i in idx)
        return {"total": len(idx), "correct": c, "accuracy": c / len(idx) if idx else 0.0}

    def by(key) -> dict:
        groups: dict = {}
        for i, r in enumerate(records):
            groups.setdefault(key(r), []).append(i)
        return {k: acc(v) for k, v in sorted(groups.items())}

    all_ = acc(list(range(len(records))))
    return {**all_,
            "by_scenario": by(lambda r: r.scenario_type),
            "by_language": by(lambda r: r.language),
            "by_language_scenario": {f"{k[0]}/{k[1]}": v for k, v in by(lambda r: (r.language, r.scenario_type)).items()},
            "error_distribution": {c: sum(x == c for x in categories) for c in CATEGORIES}}


def score_responses(records: Sequence[ToolRecord], responses: Sequence[str], start_tag: str = START_TAG,
                    end_tag: str = END_TAG) -> tuple[dict, list[dict]]:
    """``(summary, details)``: each response parsed and scored against its record (:func:`summarize`)."""
    if len(records) != len(responses):
        raise XltError(f"{len(responses)} responses for {len(records)} records", "give one response per record")
    details, cats = [], []
    for r, text in zip(records, responses):
        parsed = parse_tool_call(text, start_tag, end_tag)
        cat = score_call(r.expected_behavior, parsed)
        cats.append(cat)
        details.append({"line": r.line, "language": r.language, "scenario_type": r.scenario_type,
                        "user_message": r.user_message, "expected_behavior": r.expected_behavior,
                        "model_response": text, "parsed_call": parsed, "error_type": cat})
    return summarize(records, cats), details


# ---------------------------------------------------------------------------------------------------- prompting

SYSTEM_PROMPT = ("You can call functions. If the user's request needs one of the functions below, answer only with "
                 "{start}\n{{\"name\": FUNCTION_NAME, \"arguments\": {{...}}}}\n{end}\nOtherwise answer normally "
                 "without a function call.\nFunctions:\n{functions}")


def chat_messages(record: ToolRecord, start_tag: str = START_TAG, end_tag: str = END_TAG) -> list[dict]:
    """The chat of one record: a system message with the call format and the functions (compact JSON), then the
    user's message; without functions, the user's message alone."""
    if not record.functions:
        return [{"role": "user", "content": record.user_message}]
    sys_ = SYSTEM_PROMPT.format(start=start_tag, end=end_tag,
                                functions=json.dumps(record.functions, ensure_ascii=False, separators=(",", ":")))
    return [{"role": "system", "content": sys_}, {"role": "user", "content": record.user_message}]


def prompt_ids(tokenizer, record: ToolRecord, start_tag: str = START_TAG, end_tag: str = END_TAG) -> list[int]:
    """The record's chat through the tokenizer's chat template with the generation prompt (a tokenizer without a
    template: the messages' contents joined by blank lines)."""
    msgs = chat_messages(record, start_tag, end_tag)
    if getattr(tokenizer, "chat_template", None):
        ids = tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True)
        ids = ids["input_ids"] if hasattr(ids, "keys") else ids
        return [int(t) for t in ids]
    from xlt.infer.decode import encode_prompts

    return encode_prompts(tokenizer, ["\n\n".join(m["content"] for m in msgs) + "\n\n"])[0]


def generate_responses(model, tokenizer, records: Sequence[ToolRecord], max_new_tokens: int = 64,
                       batch_size: int = 8, start_tag: str = START_TAG, end_tag: str = END_TAG,
                       progress: bool = False) -> list[str]:
    """The model's greedy answer to every record (:func:`xlt.infer.decode.generate_pool`, pool ``greedy``, over the
    chat-templated prompts), in order. The tokens every prompt starts with (the system message with the functions,
    when the records share them) are passed as the pool's shared ``prefix``, so they run through the model once."""
    from xlt.infer.decode import generate_pool

    ids = [prompt_ids(tokenizer, r, start_tag, end_tag) for r in records]
    if not ids:
        return []
    n = _common_prefix(ids)
    prefix = ids[0][:n] if n else None
    pools = generate_pool(model, tokenizer, [x[n:] for x in ids], "greedy", max_new_tokens=max_new_tokens,
                          batch_size=batch_size, progress=progress, prefix=prefix)
    return [p[0].text for p in pools]


def target_response(record: ToolRecord, start_tag: str = START_TAG, end_tag: str = END_TAG,
                    no_call: dict[str, str] | None = None) -> str:
    """The ideal answer (for fine-tuning): the expected call as a block, or a short reply in the record's language
    saying no function applies (``no_call`` maps languages to that reply)."""
    exp = record.expected_behavior
    if exp.get("should_call_function"):
        call = {"name": exp["expected_function"], "arguments": exp.get("expected_parameters") or {}}
        return f"{start_tag}\n{json.dumps(call, ensure_ascii=False)}\n{end_tag}"
    replies = {**NO_CALL_REPLY, **(no_call or {})}
    return replies.get(record.language, NO_CALL_REPLY["en"])


NO_CALL_REPLY = {"en": "None of the available functions can answer that.",
                 "sw": "Hakuna kazi yoyote iliyopo inayoweza kujibu hilo.",
                 "fr": "Aucune des fonctions disponibles ne peut répondre à cela."}


def _common_prefix(seqs: Sequence[Sequence[int]]) -> int:
    """Tokens every sequence starts with, leaving each at least one of its own."""
    n, limit = 0, min(len(x) for x in seqs) - 1
    while n < limit and all(x[n] == seqs[0][n] for x in seqs):
        n += 1
    return n


def shared_prefix_loss(model, prefix: Sequence[int], suffixes: Sequence[Sequence[int]],
                       labels: Sequence[Sequence[int]]) -> "torch.Tensor":
    """Mean next-token cross-entropy of ``prefix + suffix`` sequences over the positions whose ``labels`` (aligned
    with ``suffixes``; -100: not scored) are set, with the shared ``prefix`` run once (its cache, with gradients,
    repeated to the batch). Equal to the loss of the whole sequences run one by one."""
    import torch

    from xlt.infer.decode import _Forward, _new_cache

    device = next(model.parameters()).device
    key = _Forward(model.get_base_model() if hasattr(model, "get_base_model") else model).cache_key
    cache = _new_cache(model)
    p = torch.tensor([list(prefix)], dtype=torch.long, device=device)
    first = model(input_ids=p, use_cache=True, **{key: cache}).logits[0, -1].float()
    cache.batch_repeat_interleave(len(suffixes))
    width = max(len(s) for s in suffixes)
    ids = torch.zeros((len(suffixes), width), dtype=torch.long, device=device)
    lab = torch.full((len(suffixes), width), -100, dtype=torch.long, device=device)
    mask = torch.zeros((len(suffixes), width), dtype=torch.long, device=device)
    for i, (s, l) in enumerate(zip(suffixes, labels)):
        ids[i, :len(s)] = torch.tensor(list(s))
        lab[i, :len(s)] = torch.tensor(list(l))
        mask[i, :len(s)] = 1
    full_mask = torch.cat([mask.new_ones((len(suffixes), len(prefix))), mask], dim=1)
    pos = (len(prefix) + torch.arange(width, device=device))[None].expand(len(suffixes), -1)
    logits = model(input_ids=ids, attention_mask=full_mask, position_ids=pos, use_cache=True,
                   **{key: cache}).logits.float()
    # position j of a suffix predicts token j+1; the suffix's first token is predicted by the prefix's last position
    pred = torch.cat([first[None, None].expand(len(suffixes), 1, -1), logits[:, :-1]], dim=1)
    return torch.nn.functional.cross_entropy(pred.reshape(-1, pred.shape[-1]), lab.reshape(-1), ignore_index=-100)


def tune_lora(model, tokenizer, records: Sequence[ToolRecord], steps: int = 20, batch_size: int = 8,
              lr: float = 1e-3, r: int = 8, alpha: int = 16, layers: Sequence[int] | None = None, seed: int = 0,
              start_tag: str = START_TAG, end_tag: str = END_TAG, progress: bool = False):
    """A PEFT LoRA (``r``, ``alpha`` on the attention and MLP projections of ``layers``; default all) trained for
    ``steps`` AdamW steps to answer each record with :func:`target_response` followed by the end-of-turn token
    (loss on the answer only); batches drawn with ``seed``. Prompts share their system prefix, run once per batch
    (:func:`shared_prefix_loss`). Returns ``(peft_model, losses)``."""
    import torch
    from peft import LoraConfig, get_peft_model
    from tqdm.auto import tqdm

    if not records:
        raise XltError("no training records", "give at least one record to tune on")
    eos = tokenizer.eos_token_id
    examples = []
    for rec in records:
        p = prompt_ids(tokenizer, rec, start_tag, end_tag)
        t = list(tokenizer(target_response(rec, start_tag, end_tag), add_special_tokens=False)["input_ids"])
        examples.append((p, t + ([eos] if eos is not None else [])))
    torch.manual_seed(seed)
    cfg = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0, layers_to_transform=list(layers) if layers else None,
                     target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    model = get_peft_model(model, cfg)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    g = torch.Generator().manual_seed(seed)
    losses = []
    model.train()
    for _ in tqdm(range(steps), desc="lora", disable=not progress):
        batch = [examples[i] for i in torch.randperm(len(examples), generator=g)[:batch_size].tolist()]
        n = _common_prefix([p for p, _ in batch])  # inside the prompts: every answer token is scored
        labels = [[-100] * (len(p) - n) + t for p, t in batch]  # the token at each suffix position, or -100
        loss = shared_prefix_loss(model, batch[0][0][:n], [(p + t)[n:] for p, t in batch], labels)
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(float(loss.detach()))
    model.eval()
    return model, losses


# ---------------------------------------------------------------------------------------------------- demo data

GET_VERSE = {"name": "get_verse", "description": "Return the text of one Bible verse.",
             "parameters": {"type": "object", "properties": {
                 "book": {"type": "string", "description": "the book's name as the user wrote it"},
                 "chapter": {"type": "integer"}, "verse": {"type": "integer"}},
                 "required": ["book", "chapter", "verse"]}}

CALL_TEMPLATES = {
    "en": ["Show me {book} chapter {chapter} verse {verse}.", "What does {book} {chapter}:{verse} say?",
           "Read {book} {chapter}:{verse} to me.", "I need the text of {book}, chapter {chapter}, verse {verse}.",
           "Can you look up verse {verse} of chapter {chapter} in {book}?", "Quote {book} {chapter}:{verse}, please."],
    "sw": ["Nionyeshe {book} sura ya {chapter} mstari wa {verse}.", "{book} {chapter}:{verse} inasema nini?",
           "Nisomee {book} {chapter}:{verse}.", "Nahitaji maneno ya {book}, sura {chapter}, mstari {verse}.",
           "Tafadhali tafuta mstari wa {verse} wa sura ya {chapter} katika kitabu cha {book}.",
           "Naomba unukuu {book} {chapter}:{verse}."],
    "fr": ["Montre-moi {book} chapitre {chapter} verset {verse}.", "Que dit {book} {chapter}:{verse} ?",
           "Lis-moi {book} {chapter}:{verse}.", "J'ai besoin du texte de {book}, chapitre {chapter}, verset {verse}.",
           "Peux-tu chercher le verset {verse} du chapitre {chapter} de {book} ?",
           "Cite {book} {chapter}:{verse}, s'il te plaît."],
}
IRRELEVANT = {
    "en": ["What is the capital of France?", "How many legs does a spider have?", "What is 12 times 7?",
           "Write a short poem about rain.", "How do I boil an egg?", "Translate 'good morning' into Spanish.",
           "Who wrote the novel Things Fall Apart?", "What is the boiling point of water?",
           "Give me a name for a pet cat.", "How far is the Moon from the Earth?"],
    "sw": ["Mji mkuu wa Ufaransa ni upi?", "Buibui ana miguu mingapi?", "Kumi na mbili mara saba ni ngapi?",
           "Andika shairi fupi kuhusu mvua.", "Ninachemshaje yai?", "Tafsiri 'habari za asubuhi' kwa Kiingereza.",
           "Nani aliandika riwaya ya Things Fall Apart?", "Maji huchemka kwa joto gani?",
           "Nipe jina la paka wa nyumbani.", "Mwezi uko umbali gani kutoka duniani?"],
    "fr": ["Quelle est la capitale du Kenya ?", "Combien de pattes a une araignée ?", "Combien font 12 fois 7 ?",
           "Écris un court poème sur la pluie.", "Comment faire cuire un œuf ?", "Traduis 'bonjour' en anglais.",
           "Qui a écrit le roman Things Fall Apart ?", "À quelle température l'eau bout-elle ?",
           "Donne-moi un nom pour un chat.", "Quelle distance sépare la Lune de la Terre ?"],
}


def bible_book_names(lang: str) -> dict[int, str]:
    """Book number (1 = Genesis … 66 = Revelation) -> the book's name in ``lang``'s Bible version, from the corpus
    database's own book table (``CamelCase`` names split into words: ``MamboYaWalawi`` -> ``Mambo Ya Walawi``)."""
    import sqlite3

    from xlt.corpora import open_corpus
    from xlt.corpora.bible import bible_db_path

    corpus = open_corpus("bible")
    version = corpus.version(lang)[0]
    con = sqlite3.connect(f"file:{bible_db_path()}?mode=ro", uri=True)
    try:
        rows = con.execute("SELECT bNumber, bName FROM bibleRef WHERE bbName=? ORDER BY bNumber", (version,)).fetchall()
    finally:
        con.close()
    if not rows:
        raise XltError(f"the Bible corpus has no book names for {lang}", "choose a language of `xlt corpus stats bible`")
    split = re.compile(r"(?<=[a-zà-ÿ])(?=[A-ZÀ-Þ])|(?<=\d)(?=[^\W\d])")
    return {int(b): split.sub(" ", str(name)).strip() for b, name in rows}


def verse_lookup_records(langs: Sequence[str] = ("en", "sw"), n_calls: int = 100, n_irrelevant: int = 25,
                         seed: int = 0) -> list[ToolRecord]:
    """Per language ``n_calls`` template queries for ``get_verse`` (random real verse keys of the Bible corpus, the
    book named in that language) and ``n_irrelevant`` questions no function answers; same keys in every language."""
    from xlt.corpora import open_corpus

    missing = [l for l in langs if l not in CALL_TEMPLATES]
    if missing:
        raise XltError(f"no verse-lookup templates for {', '.join(missing)}",
                       f"choose languages among {', '.join(CALL_TEMPLATES)}")
    if n_calls < 0 or n_irrelevant < 0 or n_calls + n_irrelevant == 0:
        raise XltError("the demo set would be empty", "ask for at least one query (n_calls, n_irrelevant ≥ 0)")
    rng = random.Random(seed)
    keys = [d.key for d in open_corpus("bible").documents("en")]
    picks = [tuple(int(x) for x in k.split(":")) for k in rng.sample(keys, n_calls)]
    out = []
    for lang in langs:
        names = bible_book_names(lang)
        lrng = random.Random(f"{seed}/{lang}")
        for i, (b, c, v) in enumerate(picks):
            text = lrng.choice(CALL_TEMPLATES[lang]).format(book=names[b], chapter=c, verse=v)
            out.append(ToolRecord(text, [GET_VERSE], {"should_call_function": True, "expected_function": "get_verse",
                                                      "expected_parameters": {"book": names[b], "chapter": c,
                                                                              "verse": v}},
                                  "function_call", lang, extra={"id": f"{lang}-call-{i}", "key": f"{b}:{c}:{v}"}))
        pool = IRRELEVANT[lang]
        for i in range(n_irrelevant):
            out.append(ToolRecord(pool[i % len(pool)], [GET_VERSE], {"should_call_function": False},
                                  "irrelevant_query", lang, extra={"id": f"{lang}-irrelevant-{i}"}))
    return out


def write_records(records: Sequence[ToolRecord], path: str | Path) -> Path:
    """Write records as JSON lines (through a temporary file and a rename)."""
    import os
    import tempfile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        for r in records:
            fh.write(json.dumps(r.to_json(), ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    return path


# ---------------------------------------------------------------------------------------------------- the run


def evaluate_tools(model: str, data: str | Path, out: str | Path, langs: Sequence[str] | None = None,
                   max_new_tokens: int = 64, batch_size: int = 8, start_tag: str = START_TAG,
                   end_tag: str = END_TAG, overwrite: bool = False, allow_pickle: bool = False,
                   progress: bool = False) -> dict:
    """``xlt eval-tools``: greedy answers of ``model`` to the records of ``data`` (in ``langs``), scored as TUCAN
    does; writes ``out/metrics.json``, ``out/responses.jsonl`` and ``out/report.html``; returns the metrics."""
    import time

    from xlt.models import load_source
    from xlt.signature import Signature, json_hash, model_hash, tokenizer_hash
    from xlt.util import atomic_dir, sha256_file, write_json_atomic

    out = Path(out)
    if out.exists() and not overwrite:
        raise XltError(f"{out} already exists", "pass --overwrite to replace it, or choose another --out")
    records = read_records(data, langs)
    t0 = time.time()
    lm, tok, folder = load_source(model, allow_pickle=allow_pickle)
    responses = generate_responses(lm, tok, records, max_new_tokens, batch_size, start_tag, end_tag, progress)
    summary, details = score_responses(records, responses, start_tag, end_tag)
    sig = Signature("toolcall", scorer="tucan-eval-1.0.3", tags=json_hash([start_tag, end_tag])[:8], decode="greedy",
                    max_new=max_new_tokens, data=sha256_file(data)[:12], n=len(records),
                    tok=tokenizer_hash(tok), model=model_hash(lm))
    metrics = {"signature": str(sig), "model": str(model), "data": Path(data).name,
               "langs": sorted({r.language for r in records}), "seconds": round(time.time() - t0, 2), **summary,
               "settings": {"max_new_tokens": max_new_tokens, "batch_size": batch_size, "start_tag": start_tag,
                            "end_tag": end_tag}}
    with atomic_dir(out, overwrite=overwrite) as tmp:
        write_json_atomic(tmp / "metrics.json", metrics)
        with open(tmp / "responses.jsonl", "w", encoding="utf-8") as fh:
            for d in details:
                fh.write(json.dumps(d, ensure_ascii=False) + "\n")
        (tmp / "report.html").write_text(render_report(metrics, details), encoding="utf-8")
    return metrics


def render_report(metrics: dict, details: Sequence[dict], runs: dict[str, dict] | None = None) -> str:
    """The HTML page of a tool-call evaluation: accuracy per language × scenario, the error distribution, examples
    of every error category; ``runs`` (name -> metrics) adds a side-by-side table (e.g. before/after tuning)."""
    import html

    from xlt.report.html import _img, _table
    from xlt.report.plots import grouped_bars
    from xlt.report.study import _page

    parts = [f"<p>TUCAN scoring (tucan-eval 1.0.3's categories and lenient value comparison) of "
             f"{metrics['total']} records: accuracy {metrics['accuracy']:.3f} ({metrics['correct']}/"
             f"{metrics['total']}).</p><p class='how'>{html.escape(metrics['signature'])}</p>"]
    runs = runs or {}
    if runs:
        rows = [[name, m["accuracy"]] + [m["error_distribution"][c] for c in CATEGORIES] for name, m in runs.items()]
        parts += ["<h2>Runs</h2>", _table(["run", "accuracy", *CATEGORIES], rows)]
    groups = {k: {"accuracy": v["accuracy"]} for k, v in metrics["by_language_scenario"].items()}
    parts += ["<h2>Accuracy per language and scenario</h2>",
              _table(["language/scenario", "n", "correct", "accuracy"],
                     [[k, v["total"], v["correct"], v["accuracy"]] for k, v in metrics["by_language_scenario"].items()]),
              _img(grouped_bars(groups, "accuracy per language/scenario", "accuracy"), "accuracy bars"),
              "<h2>Error distribution</h2>",
              _table(["category", "count"], [[c, n] for c, n in metrics["error_distribution"].items()])]
    for cat in CATEGORIES[1:]:
        ex = [d for d in details if d["error_type"] == cat][:3]
        if ex:
            parts.append(f"<h2>{cat}: examples</h2>")
            for d in ex:
                parts.append(f"<pre>[{html.escape(d['language'])}] {html.escape(d['user_message'])}\n→ "
                             f"{html.escape(d['model_response'][:400])}</pre>")
    return _page("xlt eval-tools", parts, {"options": metrics.get("settings", {})})

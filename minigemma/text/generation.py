"""Text generation: each prompt prefilled once, then every row decoded together.

    prefill: logits = forward(prompt_ids)                     one forward over a row's prompt
    decode : id_{t+1} ~ sample(logits_t)   for every row;    logits_{t+1} = forward(ids, cache)

Rows (`Row`) have their own prompts, positions, samplers, budgets and stop rules; they share one
cache (`minigemma.text.batch_cache`), in which each row's keys sit at its own positions, so the
masks that attention builds from positions keep the rows apart without padding. A decode step
is one forward of [B, 1] ids at per-row positions: the weights are read once for all B rows. A
row that stops leaves the batch; a new row (the server's next request) can join it.

With speculative decoding (`minigemma.text.speculative`) a step feeds each row its last token
and up to k drafted ones, [B, 1 + k], and keeps what the model's own sampling accepts.

Generation stops at max_new_tokens, at a stop id (EOS and <end_of_turn> by default), at a stop
string (the text before it is returned; the stop string is not), or at the end of the context.
`stream` yields text as it is decoded: a piece is emitted only once its UTF-8 bytes are complete
and it can no longer turn out to be the start of a stop string.
"""
import time
from dataclasses import dataclass, field

import numpy as np

from minigemma.text import batch_cache
from minigemma.text.sampling import Sampler, SamplingParams
from minigemma.text.speculative import PromptLookup, draft, verify


@dataclass
class GenerationStats:
    prompt_tokens: int = 0
    new_tokens: int = 0
    prefill_seconds: float = 0.0  # = time to first token (prefill + first sample), all rows
    decode_seconds: float = 0.0
    rows: int = 0  # rows that got a first token (it comes from the prefill, not a decode step)
    decode_steps: int = 0  # decode forwards
    drafted: int = 0  # speculative decoding: draft tokens verified, and how many were accepted
    accepted: int = 0

    @property
    def prefill_tok_s(self):
        return self.prompt_tokens / self.prefill_seconds if self.prefill_seconds else float("nan")

    @property
    def decode_tok_s(self):
        """New tokens per second of decoding, summed over the rows of a batch."""
        steps = self.new_tokens - self.rows  # each row's first new token comes from the prefill
        return steps / self.decode_seconds if steps > 0 and self.decode_seconds else float("nan")

    @property
    def acceptance_rate(self):
        return self.accepted / self.drafted if self.drafted else float("nan")

    def summary(self):
        text = (f"prefill {self.prompt_tokens} tok at {self.prefill_tok_s:.1f} tok/s, "
                f"decode {self.new_tokens} tok at {self.decode_tok_s:.1f} tok/s, "
                f"time to first token {self.prefill_seconds:.3f} s")
        if self.rows > 1:
            text += f", {self.rows} rows"
        if self.drafted:
            text += (f", speculative: {self.accepted}/{self.drafted} drafts accepted "
                     f"({self.acceptance_rate:.0%})")
        return text


def default_stop_ids(tokenizer):
    ids = {tokenizer.eos_id}
    if tokenizer.end_of_turn_id is not None:
        ids.add(tokenizer.end_of_turn_id)
    return ids


@dataclass
class Row:
    """One sequence to continue: its prompt ids (BOS first), budget, sampler and stop ids;
    `logprobs` (k) overrides the generator's for this row."""
    prompt: list
    max_new_tokens: int
    sampler: Sampler
    stop_ids: set = field(default_factory=set)
    logprobs: int | None = None


@dataclass(frozen=True)
class NewToken:
    """A generated token of row `row`. With logprobs=k: its log-probability and the k most
    likely ids with theirs, under the model's distribution (the log-softmax of its logits,
    before the sampler's filters); ids of equal log-probability in ascending order."""
    row: int
    token: int
    logprob: float | None = None
    top_ids: tuple = ()
    top_logprobs: tuple = ()


def check_prompt(config, prompt_ids, max_new_tokens):
    """Validate a row; returns its budget: min(max_new_tokens, what the context leaves)."""
    if len(prompt_ids) == 0:
        raise ValueError("the prompt is empty: give at least one token")
    if any(isinstance(i, (bool, np.bool_)) or not isinstance(i, (int, np.integer))
           for i in prompt_ids):
        raise ValueError(f"prompt ids must be a 1-D sequence of integers in [0, "
                         f"{config.vocab_size}), got {_preview(prompt_ids)}")
    ids = np.asarray(prompt_ids)
    if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer) \
            or ids.min() < 0 or ids.max() >= config.vocab_size:
        raise ValueError(f"prompt ids must be a 1-D sequence of integers in [0, "
                         f"{config.vocab_size}), got {_preview(prompt_ids)}")
    if len(prompt_ids) >= config.max_position:
        raise ValueError(f"the prompt has {len(prompt_ids)} tokens; the model's context is "
                         f"{config.max_position} tokens")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, (int, np.integer)) \
            or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be a non-negative integer, got {max_new_tokens!r}")
    return min(int(max_new_tokens), config.max_position - len(prompt_ids))


def _preview(ids):
    ids = list(ids)
    return repr(ids) if len(ids) <= 8 else repr(ids[:8])[:-1] + ", ...]"


class _Active:
    """A row being decoded: its number, its ids so far, tokens left; the last id is the one
    the next forward feeds (it is not in the cache yet)."""

    def __init__(self, number, row, budget):
        self.number, self.row, self.history, self.left = number, row, list(row.prompt), budget

    @property
    def position(self):  # of the last token, the one the next forward feeds
        return len(self.history) - 1


class BatchGenerator:
    """Rows decoded together; `add` prefills rows, `step` decodes one step of every row.

        gen = BatchGenerator(model)
        events = gen.add([Row(ids_a, 32, Sampler(params)), Row(ids_b, 32, Sampler(params))])
        while gen.active:
            events += gen.step()       # NewToken events, in order within each row

    A row ends at a stop id (not reported), after max_new_tokens, at the end of the context, or
    when `finish(row)` is called; `ended[row]` then says why: "stop" (a stop id or `finish`) or
    "length" (max_new_tokens or the context). Row numbers count up from 0 over the
    generator's life.
    """

    def __init__(self, model, speculative=None, logprobs=None, stats=None):
        self.model, self.backend, self.config = model, model.backend, model.config
        self.lookup = PromptLookup.from_value(speculative)
        if logprobs is not None and (isinstance(logprobs, bool) or not isinstance(logprobs, int)
                                     or not 0 <= logprobs <= model.config.vocab_size):
            raise ValueError(f"logprobs must be None or an integer in [0, vocab size], got "
                             f"{logprobs!r}")
        self.logprobs = logprobs
        self.stats = stats if stats is not None else GenerationStats()
        # Ids that can be sampled: the tokenizer's pieces (an embedding may have padded rows
        # beyond them, as Gemma 3 4B+ has: 262208 rows, 262144 pieces), else every row.
        tokenizer = getattr(model, "tokenizer", None)
        self.vocab = tokenizer.vocab_size if tokenizer is not None else self.config.vocab_size
        self.rows = []  # _Active, in cache order
        self.cache = None
        self.next_row = 0
        self.ended = {}  # row number -> "stop" | "length"

    @property
    def active(self):
        return len(self.rows)

    def add(self, rows):
        """Prefill `rows` (Row), sample their first tokens; returns those NewToken events.
        Identical prompts are prefilled once."""
        budgets = [check_prompt(self.config, r.prompt, r.max_new_tokens) for r in rows]
        start = time.perf_counter()
        xp = self.backend.xp
        if self.cache is None:
            spare = self.lookup.num_draft if self.lookup else 0
            self.cache = batch_cache.new_batch_cache(self.model, 0, 16, spare)
        longest = max((len(r.prompt) for r in rows), default=0)
        batch_cache.ensure_room(self.cache, self.config, longest, xp)
        events, caches, prefilled = [], [], {}
        for row, budget in zip(rows, budgets):
            key = tuple(row.prompt)
            if key not in prefilled:
                one = batch_cache.empty_like(self.cache, 1, xp)
                ids = self.backend.asarray(np.asarray([row.prompt], dtype=np.int64))
                positions = self.backend.asarray(np.arange(len(row.prompt))[None])  # [1, T]
                logits, one = self.model.forward(ids, positions, one, last_only=True)
                prefilled[key] = (self._sampled(logits[:, -1])[0], one)
                self.stats.prompt_tokens += len(row.prompt)
            last_logits, one = prefilled[key]
            number, self.next_row = self.next_row, self.next_row + 1
            active = _Active(number, row, budget)
            if budget == 0:
                self.ended[number] = "length"
                continue
            token = row.sampler(last_logits, active.history)
            if token in row.stop_ids:
                self.ended[number] = "stop"
                continue
            events.append(self._event(active, token, last_logits))
            active.history.append(token)
            active.left -= 1
            self.stats.new_tokens += 1
            self.stats.rows += 1
            if active.left > 0:
                self.rows.append(active)
                caches.append(one)
            else:
                self.ended[number] = "length"
        if caches:
            self.cache = batch_cache.join([self.cache] + caches, xp)
        self.stats.prefill_seconds += time.perf_counter() - start
        return events

    def finish(self, number, reason="stop"):
        """Stop decoding row `number` (e.g. its stop string has appeared)."""
        keep = [i for i, a in enumerate(self.rows) if a.number != number]
        if len(keep) < len(self.rows):
            self.ended[number] = reason
            self._keep(keep)

    def step(self):
        """One forward for every active row; returns its NewToken events."""
        if not self.rows:
            return []
        start = time.perf_counter()
        be, xp = self.backend, self.backend.xp
        drafts = [draft(a.history, self.lookup, a.left - 1) if self.lookup else []
                  for a in self.rows]
        room = min(self.config.max_position - a.position for a in self.rows)
        width = min(1 + max(len(d) for d in drafts), room)  # T of this step's forward
        drafts = [d[:width - 1] for d in drafts]
        ids = np.array([[a.history[-1]] + d + [a.history[-1]] * (width - 1 - len(d))
                        for a, d in zip(self.rows, drafts)], dtype=np.int64)  # [B, T]
        first = np.array([a.position for a in self.rows], dtype=np.int64)
        positions = first[:, None] + np.arange(width)  # [B, T]
        batch_cache.ensure_room(self.cache, self.config, int(positions.max()) + 1, xp)
        logits, self.cache = self.model.forward(be.asarray(ids), be.asarray(positions),
                                                self.cache)
        logits = self._sampled(logits)  # [B, T, V]
        events, keep = [], []
        for b, (a, d) in enumerate(zip(self.rows, drafts)):
            emitted = verify(a.row.sampler, logits[b], d, a.history)
            self.stats.drafted += len(d)
            self.stats.accepted += len(emitted) - 1
            for i, token in enumerate(emitted):
                if token in a.row.stop_ids:
                    self.ended[a.number] = "stop"
                    break
                events.append(self._event(a, token, logits[b, i]))
                a.history.append(token)
                a.left -= 1
                self.stats.new_tokens += 1
            if a.number in self.ended:
                continue
            if a.left > 0 and a.position < self.config.max_position:
                keep.append(b)
            else:
                self.ended[a.number] = "length"
        if width > 1:  # the keys of rejected drafts (and of padding) are forgotten
            batch_cache.forget_after(self.cache, [a.position - 1 for a in self.rows], xp)
        if len(keep) < len(self.rows):
            self._keep(keep)
        self.stats.decode_steps += 1
        self.stats.decode_seconds += time.perf_counter() - start
        return events

    def _sampled(self, logits):
        """Backend logits [..., V] -> host logits of the ids that can be sampled, checked to be
        free of NaN (finite weights can still overflow float32 in a forward pass)."""
        logits = self.backend.to_numpy(logits)[..., :self.vocab]
        if np.isnan(logits).any():
            raise ValueError(f"{getattr(self.model, 'path', None) or 'the model'}: the forward "
                             f"pass produced NaN logits: the weights overflow float32")
        return logits

    def _keep(self, indices):
        self.rows = [self.rows[i] for i in indices]
        self.cache = batch_cache.take(self.cache, indices, self.backend.xp)

    def _event(self, active, token, logits):
        number, k = active.number, active.row.logprobs
        k = self.logprobs if k is None else k
        if k is None:
            return NewToken(number, int(token))
        logp = log_softmax(logits)
        top = np.argpartition(-logp, k - 1)[:k] if 0 < k < logp.size else np.arange(logp.size)[:k]
        top = top[np.lexsort((top, -logp[top]))]  # most likely first, then ascending ids
        return NewToken(number, int(token), float(logp[token]), tuple(int(i) for i in top),
                        tuple(float(logp[i]) for i in top))


def log_softmax(logits):
    """[V] logits -> [V] float64 log-probabilities: x − max − log Σ exp(x − max)."""
    x = np.asarray(logits, dtype=np.float64)
    shifted = x - x.max()
    return shifted - np.log(np.exp(shifted).sum())


def generate_batch(model, rows, *, speculative=None, logprobs=None, stats=None):
    """Yield the NewToken events of decoding `rows` (Row) together; row = index into `rows`."""
    gen = BatchGenerator(model, speculative, logprobs, stats)
    events = gen.add(rows)
    while True:
        for event in events:
            yield event
        if not gen.active:
            return
        events = gen.step()


def generate_ids(model, prompt_ids, max_new_tokens, sampler, stop_ids, stats, *,
                 speculative=None):
    """Yield the new token ids of one prompt (a stop id ends the stream without being
    yielded); the batch of one of `BatchGenerator`."""
    row = Row(list(prompt_ids), max_new_tokens, sampler, set(stop_ids))
    for event in generate_batch(model, [row], speculative=speculative, stats=stats):
        yield event.token


class _TextOfRow:
    """Decoded text of one row, held back while it could still begin a stop string."""

    def __init__(self, tokenizer, stop_strings):
        self.decoder = tokenizer.stream_decoder()
        self.stops = stop_strings
        self.hold = max((len(s) for s in stop_strings), default=1) - 1
        self.pending = ""  # decoded text not yet emitted: it could still begin a stop string
        self.stopped = False

    def feed(self, token):
        """-> the text that can be emitted now ("" if none); sets `stopped` at a stop string."""
        self.pending += self.decoder.feed(token)
        return self._emit()

    def flush(self):
        if self.stopped:
            return ""
        self.pending += self.decoder.flush()
        return self._emit(final=True)

    def _emit(self, final=False):
        hits = [self.pending.find(s) for s in self.stops if s in self.pending]
        if hits:
            self.stopped = True
            piece, self.pending = self.pending[:min(hits)], ""
            return piece
        cut = len(self.pending) if final else len(self.pending) - self.hold
        piece, self.pending = self.pending[:max(cut, 0)], self.pending[max(cut, 0):]
        return piece


def stop_strings_of(stop):
    if stop is not None and not isinstance(stop, (str, list, tuple)):
        raise TypeError(f"stop must be a string or a list of strings, got {type(stop).__name__}")
    stop_strings = [stop] if isinstance(stop, str) else list(stop or [])
    if any(not isinstance(s, str) or not s for s in stop_strings):
        raise ValueError("stop strings must be non-empty strings")
    return stop_strings


def stop_ids_of(stop_ids, tokenizer):
    """The set of stop ids: the tokenizer's EOS and <end_of_turn> when None."""
    if stop_ids is None:
        return default_stop_ids(tokenizer)
    if not isinstance(stop_ids, (set, frozenset, list, tuple)) or any(
            isinstance(i, bool) or not isinstance(i, (int, np.integer)) for i in stop_ids):
        raise TypeError(f"stop_ids must be a set of token ids, got {stop_ids!r:.80}")
    return set(int(i) for i in stop_ids)


def stream_texts(model, prompts_ids, *, max_new_tokens=64, stop=None, stop_ids=None,
                 sampling=None, speculative=None, logprobs=None, stats=None):
    """Decode several prompts together; yield (row, piece, event): the text that row `row` can
    emit after the token of `event` ("" while held back), and (row, piece, None) for what is
    left at its end. `sampling` is one SamplingParams for every row, or one per row; each row
    gets its own Sampler (its own seeded generator)."""
    tokenizer = model.tokenizer
    stop_strings = stop_strings_of(stop)
    stop_ids = stop_ids_of(stop_ids, tokenizer)
    sampling = sampling or SamplingParams()
    per_row = sampling if isinstance(sampling, (list, tuple)) else [sampling] * len(prompts_ids)
    rows = [Row(list(ids), max_new_tokens, Sampler(params), stop_ids)
            for ids, params in zip(prompts_ids, per_row)]
    texts = [_TextOfRow(tokenizer, stop_strings) for _ in rows]
    gen = BatchGenerator(model, speculative, logprobs, stats)
    events = gen.add(rows)
    ended = set()
    while True:
        for event in events:
            text = texts[event.row]
            if text.stopped:
                continue
            piece = text.feed(event.token)
            yield event.row, piece, event
            if text.stopped:
                gen.finish(event.row)
        live = {a.number for a in gen.rows}
        for r in range(len(rows)):
            if r not in live and r not in ended:
                ended.add(r)
                yield r, texts[r].flush(), None
        if not gen.active:
            return
        events = gen.step()


def stream_text(model, prompt_ids, *, max_new_tokens=64, stop=None, stop_ids=None,
                sampling=None, stats=None, speculative=None):
    """Yield pieces of text as the tokens of one prompt are decoded (module docstring)."""
    for _, piece, _ in stream_texts(model, [prompt_ids], max_new_tokens=max_new_tokens,
                                    stop=stop, stop_ids=stop_ids, sampling=sampling,
                                    speculative=speculative, stats=stats):
        if piece:
            yield piece


def chat_turns(messages):
    """[(role, text)] of a conversation, checked: {"role", "content"} dicts, content a string,
    roles alternating user / model ("assistant" is read as "model"), starting and ending with
    the user; a leading system message merged into the first user turn (followed by a blank
    line), as the Gemma 3 template does."""
    if isinstance(messages, (str, bytes)) or not hasattr(messages, "__iter__"):
        raise TypeError(f"chat takes a list of messages, got {type(messages).__name__}")
    messages = list(messages)
    if not messages:
        raise ValueError("chat needs at least one message")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or set(m) != {"role", "content"}:
            raise ValueError(f"message {i}: a chat message is a dict with 'role' and 'content', "
                             f"got {m!r}")
        if not isinstance(m["content"], str) or not isinstance(m["role"], str):
            raise TypeError(f"message {i}: role and content must be strings, got "
                            f"{type(m['role']).__name__} and {type(m['content']).__name__}")
    messages = [dict(m) for m in messages]
    if messages[0]["role"] == "system":
        system = messages.pop(0)["content"].strip()
        if not messages or messages[0]["role"] != "user":
            raise ValueError("a system message must be followed by a user message")
        messages[0]["content"] = f"{system}\n\n{messages[0]['content'].strip()}"
    turns = []
    for i, m in enumerate(messages):
        role = {"assistant": "model"}.get(m["role"], m["role"])
        expected = "user" if i % 2 == 0 else "model"
        if role != expected:
            raise ValueError(f"message {i} has role {m['role']!r}; roles must alternate "
                             f"user/assistant starting with user")
        turns.append((role, m["content"].strip()))
    if turns[-1][0] != "user":
        raise ValueError("the last chat message must come from the user")
    return turns


def chat_prompt(messages):
    """Gemma's turn format for a list of {"role", "content"} messages, ending ready for the model,
    as text (to read; `chat_ids` gives the ids the model is fed).

    <start_of_turn>user\\n{text}<end_of_turn>\\n<start_of_turn>model\\n{text}<end_of_turn>\\n…
    """
    parts = [f"<start_of_turn>{role}\n{text}<end_of_turn>\n"
             for role, text in chat_turns(messages)]
    return "".join(parts) + "<start_of_turn>model\n"


def chat_ids(tokenizer, messages):
    """The token ids of `chat_prompt(messages)`, BOS first, in which only the template's own
    <start_of_turn> and <end_of_turn> are control tokens: a message's text is encoded as text,
    so "<end_of_turn>" typed in a message cannot end its turn or forge another.

    Each run of text between two control tokens is encoded as one piece of text, exactly as
    HF's chat template tokenizes it when the messages hold no control-token text."""
    start, end = tokenizer.start_of_turn_id, tokenizer.end_of_turn_id
    if start is None or end is None:
        raise ValueError("this vocabulary has no <start_of_turn> / <end_of_turn>: it is not a "
                         "chat model's")
    ids = [tokenizer.bos_id]
    between = ""  # the text since the last control token
    for role, text in chat_turns(messages):
        ids += tokenizer.encode(between, add_bos=False) + [start]
        ids += tokenizer.encode(f"{role}\n{text}", add_bos=False) + [end]
        between = "\n"
    return ids + tokenizer.encode(between, add_bos=False) + [start] + \
        tokenizer.encode("model\n", add_bos=False)

"""Text generation: one batched prefill, then token-by-token decoding with the KV cache.

    prefill: logits_T = forward(prompt_ids)           one forward over the whole prompt
    decode : id_{t+1} ~ sample(logits_t);  logits_{t+1} = forward([id_{t+1}], cache)

Generation stops at max_new_tokens, at a stop id (EOS and <end_of_turn> by default), at a stop
string (the text before it is returned; the stop string is not), or at the end of the context.
`stream` yields text as it is decoded: a piece is emitted only once its UTF-8 bytes are complete
and it can no longer turn out to be the start of a stop string.
"""
import time
from dataclasses import dataclass

import numpy as np

from minigemma.text.sampling import Sampler, SamplingParams


@dataclass
class GenerationStats:
    prompt_tokens: int = 0
    new_tokens: int = 0
    prefill_seconds: float = 0.0  # = time to first token (prefill + first sample)
    decode_seconds: float = 0.0

    @property
    def prefill_tok_s(self):
        return self.prompt_tokens / self.prefill_seconds if self.prefill_seconds else float("nan")

    @property
    def decode_tok_s(self):
        steps = self.new_tokens - 1  # the first new token comes from the prefill
        return steps / self.decode_seconds if steps > 0 and self.decode_seconds else float("nan")

    def summary(self):
        return (f"prefill {self.prompt_tokens} tok at {self.prefill_tok_s:.1f} tok/s, "
                f"decode {self.new_tokens} tok at {self.decode_tok_s:.1f} tok/s, "
                f"time to first token {self.prefill_seconds:.3f} s")


def default_stop_ids(tokenizer):
    ids = {tokenizer.eos_id}
    if tokenizer.end_of_turn_id is not None:
        ids.add(tokenizer.end_of_turn_id)
    return ids


def generate_ids(model, prompt_ids, max_new_tokens, sampler, stop_ids, stats):
    """Yield new token ids (a stop id ends the stream without being yielded)."""
    config, be = model.config, model.backend
    if len(prompt_ids) == 0:
        raise ValueError("the prompt is empty: give at least one token")
    if len(prompt_ids) >= config.max_position:
        raise ValueError(f"the prompt has {len(prompt_ids)} tokens; the model's context is "
                         f"{config.max_position} tokens")
    if not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be a non-negative integer, got {max_new_tokens!r}")
    budget = min(max_new_tokens, config.max_position - len(prompt_ids))
    stats.prompt_tokens = len(prompt_ids)
    if budget == 0:
        return
    cache = model.new_cache(batch=1, max_len=len(prompt_ids) + budget)
    history = list(prompt_ids)
    start = time.perf_counter()
    logits, cache = model.forward(be.asarray(np.asarray([prompt_ids])), cache=cache, last_only=True)
    for step in range(budget):
        token = sampler(be.to_numpy(logits[0, -1]), history)
        now = time.perf_counter()
        if step == 0:
            stats.prefill_seconds = now - start
            decode_start = now
        else:
            stats.decode_seconds = now - decode_start
        if token in stop_ids:
            return
        stats.new_tokens += 1
        history.append(token)
        yield token
        if step + 1 < budget:
            logits, cache = model.forward(be.asarray(np.array([[token]])), cache=cache)


def stream_text(model, prompt_ids, *, max_new_tokens=64, stop=None, stop_ids=None,
                sampling=None, stats=None):
    """Yield pieces of text as tokens are decoded (see the module docstring)."""
    tokenizer = model.tokenizer
    stop_strings = [stop] if isinstance(stop, str) else list(stop or [])
    if any(not s for s in stop_strings):
        raise ValueError("stop strings must be non-empty")
    stop_ids = default_stop_ids(tokenizer) if stop_ids is None else set(stop_ids)
    sampler = Sampler(sampling or SamplingParams())
    stats = stats if stats is not None else GenerationStats()
    decoder = tokenizer.stream_decoder()
    pending = ""  # decoded text not yet emitted: it could still begin a stop string
    hold = max((len(s) for s in stop_strings), default=1) - 1
    for token in generate_ids(model, prompt_ids, max_new_tokens, sampler, stop_ids, stats):
        pending += decoder.feed(token)
        hits = [pending.find(s) for s in stop_strings if s in pending]
        if hits:
            yield pending[:min(hits)]
            return
        cut = len(pending) - hold
        if cut > 0:
            yield pending[:cut]
            pending = pending[cut:]
    pending += decoder.flush()
    hits = [pending.find(s) for s in stop_strings if s in pending]
    yield pending[:min(hits)] if hits else pending


def chat_prompt(messages):
    """Gemma's turn format for a list of {"role", "content"} messages, ending ready for the model.

    <start_of_turn>user\\n{text}<end_of_turn>\\n<start_of_turn>model\\n{text}<end_of_turn>\\n…
    A leading system message is merged into the first user turn (followed by a blank line), as
    the Gemma 3 template does; "assistant" is read as "model"; roles must alternate.
    """
    if not messages:
        raise ValueError("chat needs at least one message")
    messages = [dict(m) for m in messages]
    for m in messages:
        if set(m) - {"role", "content"} or "role" not in m or "content" not in m:
            raise ValueError(f"a chat message is a dict with 'role' and 'content', got {m!r}")
    if messages[0]["role"] == "system":
        system = messages.pop(0)["content"].strip()
        if not messages or messages[0]["role"] != "user":
            raise ValueError("a system message must be followed by a user message")
        messages[0]["content"] = f"{system}\n\n{messages[0]['content'].strip()}"
    parts = []
    for i, m in enumerate(messages):
        role = {"assistant": "model"}.get(m["role"], m["role"])
        expected = "user" if i % 2 == 0 else "model"
        if role != expected:
            raise ValueError(f"message {i} has role {m['role']!r}; roles must alternate "
                             f"user/assistant starting with user")
        parts.append(f"<start_of_turn>{role}\n{m['content'].strip()}<end_of_turn>\n")
    if messages[-1]["role"] != "user":
        raise ValueError("the last chat message must come from the user")
    return "".join(parts) + "<start_of_turn>model\n"

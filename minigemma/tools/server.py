"""`minigemma serve`: an OpenAI-compatible HTTP server over one model, batching its requests.

    minigemma serve [--model M] [--host 127.0.0.1] [--port 8000] [--speculative]

    GET  /v1/models              the one model served
    POST /v1/completions         prompt (a string or a list of them) -> text
    POST /v1/chat/completions    messages -> the assistant's reply (Gemma's turn format)

Both POSTs honour max_tokens (chat: also max_completion_tokens), temperature, top_p, n, stop,
seed, logprobs (chat: logprobs + top_logprobs) and stream (server-sent events, ending with
`data: [DONE]`; stream_options.include_usage adds a last chunk with the usage), and report
usage. OpenAI's defaults apply: temperature 1, top_p 1, max_tokens 16 for completions and up to
the context for chat. Choice i of a request with a seed samples with seed + i.

Batching. One thread owns the model and a `BatchGenerator`; every request's rows (n per prompt)
join the batch being decoded at its next step, and leave it when they stop, so concurrent
requests share each forward (the weights are read once per step for all of them).

Errors are OpenAI's JSON, {"error": {"message", "type", "param", "code"}}, with a 4xx status
for a bad request (400), an unknown model (404) or an unknown path; the server keeps serving.
It listens on 127.0.0.1 unless --host says otherwise.
"""
import asyncio
import contextlib
import json
import queue
import threading
import time
import uuid

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException

from minigemma.text.generation import (
    BatchGenerator,
    GenerationStats,
    Row,
    _TextOfRow,
    default_stop_ids,
    stop_strings_of,
)
from minigemma.text.sampling import Sampler, SamplingParams

MAX_BATCH = 32  # rows decoded together at most; more requests wait for a free row
DEFAULT_COMPLETION_TOKENS = 16  # OpenAI's max_tokens default for /v1/completions


class BadRequest(ValueError):
    def __init__(self, message, param=None, status=400, code=None):
        super().__init__(message)
        self.param, self.status, self.code = param, status, code


def error_body(message, kind="invalid_request_error", param=None, code=None):
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


# Requests (only the fields we read; others are ignored, as OpenAI-compatible servers do)

class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model: str
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    n: int = 1
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: dict | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None


class CompletionRequest(_Request):
    prompt: str | list[str] | list[int] | list[list[int]]
    logprobs: int | None = None
    echo: bool = False
    best_of: int | None = None
    suffix: str | None = None


class ChatRequest(_Request):
    messages: list[dict]
    max_completion_tokens: int | None = None
    logprobs: bool = False
    top_logprobs: int | None = None
    tools: list | None = None


# The thread that decodes

class Job:
    """One request's rows; the scheduler puts events on `events` (an asyncio queue, from its
    thread): ("piece", choice, text, NewToken | None), ("end", choice, reason), ("error", msg)."""

    def __init__(self, rows, loop, stop_strings):
        self.rows, self.loop, self.stop_strings = rows, loop, stop_strings
        self.events = asyncio.Queue()
        self.cancelled = False

    def put(self, item):
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, item)
        except RuntimeError:  # its event loop has closed: nobody is listening any more
            self.cancelled = True


class Scheduler:
    """Owns the model: joins waiting jobs into the running batch, steps it, routes events."""

    def __init__(self, model, speculative=False, max_batch=MAX_BATCH):
        self.model, self.speculative, self.max_batch = model, speculative, max_batch
        self.waiting = queue.Queue()
        self.stats = GenerationStats()
        self._thread = threading.Thread(target=self._run, name="minigemma-scheduler",
                                        daemon=True)
        self._stopping = False
        self._thread.start()

    def submit(self, job):
        self.waiting.put(job)

    def close(self):
        self._stopping = True
        self.waiting.put(None)
        self._thread.join(timeout=10)

    def _run(self):
        gen, owners, held = None, {}, []  # owners: row number -> (job, choice, text state)
        while not self._stopping:
            try:
                if gen is None or not gen.active:
                    gen, owners = BatchGenerator(self.model, self.speculative,
                                                 stats=self.stats), {}
                    held += [self.waiting.get()]  # idle: wait for work
                jobs, held = self._take(held, gen.active)
                for job in jobs:
                    numbers = range(gen.next_row, gen.next_row + len(job.rows))
                    for choice, number in enumerate(numbers):
                        owners[number] = (job, choice, _TextOfRow(self.model.tokenizer,
                                                                   job.stop_strings))
                    self._route(gen, owners, gen.add(job.rows))
                if gen.active:
                    self._route(gen, owners, gen.step())
            except Exception as e:  # a bug must not take the server down: fail these jobs
                for job in {job for job, _, _ in owners.values()} | set(held):
                    if job is not None:
                        job.put(("error", f"{type(e).__name__}: {e}"))
                gen, owners, held = None, {}, []

    def _take(self, held, active):
        """Waiting jobs that fit the batch now (a job's rows join together)."""
        while True:
            try:
                held.append(self.waiting.get_nowait())
            except queue.Empty:
                break
        jobs, rest, room = [], [], self.max_batch - active
        for job in held:
            if job is None or job.cancelled:
                continue
            if len(job.rows) <= room or (not jobs and active == 0):
                jobs.append(job)
                room -= len(job.rows)
            else:
                rest.append(job)
        return jobs, rest

    def _route(self, gen, owners, events):
        for event in events:
            job, choice, text = owners[event.row]
            if job.cancelled:
                gen.finish(event.row)
                continue
            if text.stopped:
                continue
            piece = text.feed(event.token)
            job.put(("piece", choice, piece, event))
            if text.stopped:
                gen.finish(event.row, "stop")
        for number in [n for n in owners if n in gen.ended]:
            job, choice, text = owners.pop(number)
            if not job.cancelled:
                tail = text.flush()
                if tail:
                    job.put(("piece", choice, tail, None))
                job.put(("end", choice, gen.ended[number]))


# Turning requests into rows

def _sampling(req, choice):
    seed = None if req.seed is None else req.seed + choice
    if req.seed is not None and req.seed < 0:
        raise BadRequest(f"seed must be >= 0, got {req.seed}", "seed")
    temperature = 1.0 if req.temperature is None else req.temperature
    if not 0 <= temperature <= 2:
        raise BadRequest(f"temperature must be in [0, 2], got {temperature}", "temperature")
    try:
        return SamplingParams(temperature=temperature, top_p=req.top_p, seed=seed)
    except ValueError as e:
        raise BadRequest(str(e), "top_p") from None


def _check_common(req, served):
    if req.model != served:
        raise BadRequest(f"The model {req.model!r} does not exist; this server serves "
                         f"{served!r}", "model", 404, "model_not_found")
    if not 1 <= req.n <= 16:
        raise BadRequest(f"n must be in [1, 16], got {req.n}", "n")
    for name in ("presence_penalty", "frequency_penalty"):
        if getattr(req, name):
            raise BadRequest(f"{name} is not supported (use 0 or leave it out)", name)
    stops = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
    if len(stops) > 4 or any(not s for s in stops):
        raise BadRequest("stop is a non-empty string or a list of at most 4 of them", "stop")
    return stops


def _rows(model, prompt_ids, max_tokens, req, stop_ids, logprobs):
    context = model.config.max_position
    if len(prompt_ids) >= context:
        raise BadRequest(f"This model's maximum context length is {context} tokens; the "
                         f"prompt has {len(prompt_ids)}", "messages" if isinstance(
                             req, ChatRequest) else "prompt", code="context_length_exceeded")
    if max_tokens is None:
        max_tokens = context - len(prompt_ids)
    if max_tokens < 1:
        raise BadRequest(f"max_tokens must be at least 1, got {max_tokens}", "max_tokens")
    if len(prompt_ids) + max_tokens > context:
        raise BadRequest(f"This model's maximum context length is {context} tokens; the "
                         f"prompt has {len(prompt_ids)} and max_tokens asks {max_tokens} more",
                         "max_tokens", code="context_length_exceeded")
    return [Row(list(prompt_ids), max_tokens, Sampler(_sampling(req, i)), stop_ids, logprobs)
            for i in range(req.n)]


def _chat_messages(messages):
    """OpenAI messages -> [{"role", "content"}] with text content (text parts joined)."""
    out = []
    for i, m in enumerate(messages):
        role, content = m.get("role"), m.get("content")
        if role == "developer":
            role = "system"
        if role not in ("system", "user", "assistant"):
            raise BadRequest(f"messages[{i}]: role {role!r} is not supported (system, user, "
                             f"assistant)", f"messages[{i}].role")
        if isinstance(content, list):
            parts = [p.get("text") for p in content if isinstance(p, dict)]
            if any(not isinstance(p, str) for p in parts) or len(parts) != len(content):
                raise BadRequest(f"messages[{i}]: only text content parts are supported",
                                 f"messages[{i}].content")
            content = "".join(parts)
        if not isinstance(content, str):
            raise BadRequest(f"messages[{i}]: content must be a string", f"messages[{i}].content")
        out.append({"role": role, "content": content})
    return out


def _token_text(tokenizer, token):
    return tokenizer.decode([token], skip_special=False)


# The app

def build_app(model, model_id="minigemma", speculative=False, max_batch=MAX_BATCH):
    """The FastAPI app serving `model` under the name `model_id`."""
    if model.tokenizer is None:
        raise ValueError(f"{model.path}: the server needs a model with a tokenizer")
    tokenizer = model.tokenizer
    stop_ids = default_stop_ids(tokenizer)
    created = int(time.time())
    state = {}

    @contextlib.asynccontextmanager
    async def lifespan(app):
        state["scheduler"] = Scheduler(model, speculative, max_batch)
        yield
        state.pop("scheduler").close()
    app = FastAPI(title="minigemma", version="0.1.0", lifespan=lifespan)

    @app.exception_handler(BadRequest)
    async def _bad(request, e):
        kind = "invalid_request_error" if e.status != 404 else "not_found_error"
        return JSONResponse(error_body(str(e), kind, e.param, e.code), status_code=e.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request, e):
        first = e.errors()[0] if e.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
        message = f"{first.get('msg', 'invalid request')}" + (f" ({where})" if where else "")
        return JSONResponse(error_body(message, param=where), status_code=400)

    @app.exception_handler(HTTPException)
    async def _http(request, e):
        return JSONResponse(error_body(str(e.detail), "invalid_request_error"),
                            status_code=e.status_code)

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": model_id, "object": "model",
                                            "created": created, "owned_by": "minigemma"}]}

    @app.get("/v1/models/{name}")
    async def one_model(name: str):
        if name != model_id:
            raise BadRequest(f"The model {name!r} does not exist", "model", 404,
                             "model_not_found")
        return {"id": model_id, "object": "model", "created": created, "owned_by": "minigemma"}

    @app.post("/v1/completions")
    async def completions(req: CompletionRequest):
        stops = _check_common(req, model_id)
        if req.echo or (req.best_of or 1) > 1 or req.suffix:
            raise BadRequest("echo, best_of > 1 and suffix are not supported")
        if req.logprobs is not None and not 0 <= req.logprobs <= 5:
            raise BadRequest("logprobs must be in [0, 5]", "logprobs")
        prompts = req.prompt
        if isinstance(prompts, str) or (prompts and isinstance(prompts[0], int)):
            prompts = [prompts]
        if not prompts:
            raise BadRequest("prompt must not be empty", "prompt")
        encoded = []
        for p in prompts:
            ids = tokenizer.encode(p) if isinstance(p, str) else list(p)
            if len(ids) == 0 or (isinstance(p, str) and not p):
                raise BadRequest("prompt must not be empty", "prompt")
            if min(ids) < 0 or max(ids) >= model.config.vocab_size:
                raise BadRequest(f"prompt token ids must lie in [0, {model.config.vocab_size})",
                                 "prompt")
            encoded.append(ids)
        max_tokens = DEFAULT_COMPLETION_TOKENS if req.max_tokens is None else req.max_tokens
        rows = [_rows(model, ids, max_tokens, req, stop_ids, req.logprobs) for ids in encoded]
        jobs = [_submit(state, r, stops) for r in rows]  # every prompt checked first
        prompt_tokens = sum(len(ids) for ids in encoded)
        return await _respond(req, jobs, prompt_tokens, _completion_shape(tokenizer, req, model_id))

    @app.post("/v1/chat/completions")
    async def chat(req: ChatRequest):
        stops = _check_common(req, model_id)
        if req.tools:
            raise BadRequest("tools are not supported", "tools")
        if req.top_logprobs is not None and not 0 <= req.top_logprobs <= 20:
            raise BadRequest("top_logprobs must be in [0, 20]", "top_logprobs")
        try:
            ids = model._chat_ids(_chat_messages(req.messages))
        except BadRequest:
            raise
        except ValueError as e:
            raise BadRequest(str(e), "messages") from None
        max_tokens = req.max_completion_tokens if req.max_completion_tokens is not None \
            else req.max_tokens
        rows = _rows(model, ids, max_tokens, req, stop_ids,
                     (req.top_logprobs or 0) if req.logprobs else None)
        job = _submit(state, rows, stops)
        return await _respond(req, [job], len(ids), _chat_shape(tokenizer, req, model_id))

    return app


def _submit(state, rows, stops):
    job = Job(rows, asyncio.get_running_loop(), stop_strings_of(stops))
    state["scheduler"].submit(job)
    return job


async def _events(jobs):
    """(prompt index, choice, kind, ...) from every job until each has ended all its rows."""
    merged = asyncio.Queue()

    async def pump(i, job):
        left = len(job.rows)
        while left:
            item = await job.events.get()
            await merged.put((i,) + item)
            if item[0] == "end":
                left -= 1
            elif item[0] == "error":
                return
        await merged.put((i, "job-done"))
    tasks = [asyncio.create_task(pump(i, job)) for i, job in enumerate(jobs)]
    try:
        done = 0
        while done < len(jobs):
            item = await merged.get()
            if item[1] == "job-done":
                done += 1
                continue
            if item[1] == "error":
                raise RuntimeError(item[2])
            yield item
    finally:
        for job in jobs:
            job.cancelled = True  # a client gone mid-stream frees its rows at the next step
        for t in tasks:
            t.cancel()


async def _respond(req, jobs, prompt_tokens, shape):
    n = req.n
    ident, created = f"{shape.prefix}-{uuid.uuid4().hex[:24]}", int(time.time())
    if not req.stream:
        texts, reasons, tokens = {}, {}, {}
        try:
            async for i, kind, choice, *rest in _events(jobs):
                index = i * n + choice
                if kind == "piece":
                    texts[index] = texts.get(index, "") + rest[0]
                    if rest[1] is not None:
                        tokens.setdefault(index, []).append(rest[1])
                else:
                    reasons[index] = rest[0]
        except RuntimeError as e:
            return JSONResponse(error_body(str(e), "server_error"), status_code=500)
        count = len(jobs) * n
        choices = [shape.choice(k, texts.get(k, ""), reasons.get(k), tokens.get(k, []))
                   for k in range(count)]
        completion = sum(len(t) for t in tokens.values())
        return {"id": ident, "object": shape.object, "created": created, "model": shape.model,
                "choices": choices, "usage": _usage(prompt_tokens, completion)}

    async def sse():
        completion = 0
        if shape.first_delta is not None:
            for k in range(len(jobs) * n):
                yield _sse(shape.chunk(ident, created, k, shape.first_delta, None, []))
        try:
            async for i, kind, choice, *rest in _events(jobs):
                index = i * n + choice
                if kind == "piece":
                    events = [] if rest[1] is None else [rest[1]]
                    completion += len(events)
                    if rest[0] or (events and shape.k is not None):
                        yield _sse(shape.chunk(ident, created, index, rest[0], None, events))
                else:
                    yield _sse(shape.chunk(ident, created, index, None, rest[0], []))
        except RuntimeError as e:
            yield _sse(error_body(str(e), "server_error"))
            return
        if (req.stream_options or {}).get("include_usage"):
            yield _sse({"id": ident, "object": shape.chunk_object, "created": created,
                        "model": shape.model, "choices": [],
                        "usage": _usage(prompt_tokens, completion)})
        yield "data: [DONE]\n\n"
    return StreamingResponse(sse(), media_type="text/event-stream")


def _usage(prompt_tokens, completion_tokens):
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def _sse(payload):
    return f"data: {json.dumps(payload)}\n\n"


class _completion_shape:
    """The JSON of /v1/completions: choices with "text", logprobs in the legacy layout."""
    prefix, object, chunk_object, first_delta = "cmpl", "text_completion", "text_completion", None

    def __init__(self, tokenizer, req, model):
        self.tokenizer, self.k, self.model = tokenizer, req.logprobs, model

    def _logprobs(self, tokens):
        if self.k is None:
            return None
        tok = self.tokenizer
        texts = [_token_text(tok, t.token) for t in tokens]
        offsets, at = [], 0
        for text in texts:
            offsets.append(at)
            at += len(text)
        return {"tokens": texts, "token_logprobs": [t.logprob for t in tokens],
                "top_logprobs": [{_token_text(tok, i): lp for i, lp in
                                  zip(t.top_ids[:self.k], t.top_logprobs[:self.k])}
                                 for t in tokens],
                "text_offset": offsets}

    def choice(self, index, text, reason, tokens):
        return {"text": text, "index": index, "logprobs": self._logprobs(tokens),
                "finish_reason": reason}

    def chunk(self, ident, created, index, text, reason, tokens):
        return {"id": ident, "object": self.chunk_object, "created": created, "model": self.model,
                "choices": [{"text": text or "", "index": index, "finish_reason": reason,
                             "logprobs": self._logprobs(tokens) if tokens else None}]}


class _chat_shape:
    """The JSON of /v1/chat/completions: a message per choice, deltas when streaming."""
    prefix, object, chunk_object = "chatcmpl", "chat.completion", "chat.completion.chunk"
    first_delta = ""  # streaming opens each choice with {"role": "assistant"}

    def __init__(self, tokenizer, req, model):
        self.tokenizer, self.model = tokenizer, model
        self.k = (req.top_logprobs or 0) if req.logprobs else None

    def _logprobs(self, tokens):
        if self.k is None:
            return None
        tok = self.tokenizer

        def entry(token, logprob):
            text = _token_text(tok, token)
            return {"token": text, "logprob": logprob, "bytes": list(text.encode("utf-8"))}
        return {"content": [{**entry(t.token, t.logprob),
                             "top_logprobs": [entry(i, lp) for i, lp in
                                              zip(t.top_ids[:self.k], t.top_logprobs[:self.k])]}
                            for t in tokens]}

    def choice(self, index, text, reason, tokens):
        return {"index": index, "message": {"role": "assistant", "content": text},
                "logprobs": self._logprobs(tokens), "finish_reason": reason}

    def chunk(self, ident, created, index, text, reason, tokens):
        if text == "" and reason is None and not tokens:
            delta = {"role": "assistant", "content": ""}
        else:
            delta = {} if text is None else {"content": text}
        return {"id": ident, "object": self.chunk_object, "created": created, "model": self.model,
                "choices": [{"index": index, "delta": delta, "finish_reason": reason,
                             "logprobs": self._logprobs(tokens) if tokens else None}]}


def serve(model, host="127.0.0.1", port=8000, model_id="minigemma", speculative=False,
          log_level="info"):
    """Run the server until interrupted."""
    import uvicorn
    uvicorn.run(build_app(model, model_id, speculative), host=host, port=port,
                log_level=log_level)

"""A loaded model: network + backend + tokenizer, behind the public interface.

    model = minigemma.load(path)          # backend="auto": CuPy, else Numba, else NumPy
    model.logits(ids)                      # np.ndarray [T, V] float32
    model.forward(ids, positions, cache)   # backend arrays, [B, T] in, ([B, T, V], cache) out
    model.network                          # Transformer (Gemma 1/2/3) or Griffin (RecurrentGemma)

Both networks have one surface: `config`, `params`, `backend`, `embed_scale`, the static
`parameter_shapes(config)` and `embedding_scale_for(config, embedding_dtype)`,
`new_cache(batch, max_len)`, `forward(ids, positions, cache, last_only)`,
`layer(i, h, positions, layer_cache)` and the blocks of a layer (`attention_block`,
`mlp_block`, and Griffin's `recurrent_block`).
"""
import hashlib
import os
import sys

import numpy as np

from minigemma.backends import available_backends, get_backend
from minigemma.backends.base import Backend
from minigemma.formats.files import read_json, regular_file
from minigemma.formats.native import read_checkpoint, read_tokenizer
from minigemma.models.blocks import tied_head
from minigemma.models.config import GemmaConfig
from minigemma.models.gemma import Transformer
from minigemma.models.kv_cache import token_positions
from minigemma.text.generation import (
    BatchGenerator,
    GenerationStats,
    Row,
    chat_ids,
    default_stop_ids,
    stream_texts,
)
from minigemma.text.sampling import Sampler, SamplingParams

SAMPLING_ARGS = ("temperature", "top_k", "top_p", "min_p", "repetition_penalty", "seed")


class Model:
    def __init__(self, network, tokenizer=None, meta=None, path=None):
        self.last_stats = None  # GenerationStats of the latest generate/stream/chat
        self.network = network
        self.tokenizer = tokenizer
        self.meta = meta or {}
        self.path = path

    @property
    def config(self):
        return self.network.config

    @property
    def backend(self):
        return self.network.backend

    def forward(self, ids, positions=None, cache=None, last_only=False):
        return self.network.forward(ids, positions, cache, last_only)

    def new_cache(self, batch=1, max_len=None):
        return self.network.new_cache(batch, max_len)

    def logits(self, ids):
        """ids: a sequence of token ids (BOS first) -> np.ndarray [T, V] float32."""
        logits, _ = self.forward(self.backend.asarray(self._id_row(ids)))
        logits = self.backend.to_numpy(logits[0]).astype(np.float32, copy=False)
        if not np.isfinite(logits).all():  # finite weights can still overflow float32
            raise ValueError(f"{self.path or 'the model'}: the forward pass produced "
                             f"non-finite logits: the weights overflow float32")
        return logits

    def hidden_states(self, ids):
        """ids: a sequence of token ids -> np.ndarray [num_layers + 1, T, D] float32: the
        residual stream after the embedding and after each layer (HF's `output_hidden_states`).

        `unembed(hidden_states(ids)[-1])` equals `logits(ids)`; applied to earlier layers it is
        the "logit lens": what the model would predict if it stopped there.
        """
        net, be = self.network, self.backend
        ids, positions = token_positions(be.asarray(self._id_row(ids)), None, None,
                                         self.config.max_position, be.xp)  # [1, T] each
        h = be.embed(net.params["embedding"], ids, net.embed_scale)  # [1, T, D]
        states = [h]
        for i in range(self.config.num_layers):
            h = net.layer(i, h, positions)
            states.append(h)
        return np.stack([be.to_numpy(s[0]) for s in states]).astype(np.float32, copy=False)

    def unembed(self, h):
        """h [..., D] (a residual stream) -> logits [..., V] float32: the final RMSNorm, the tied
        output head and the final soft-cap, as at the end of `forward`."""
        be, c = self.backend, self.config
        logits = tied_head(be, be.asarray(np.asarray(h, dtype=np.float32)),
                           self.network.params["embedding"], self.network.params["final_norm"],
                           c.rms_eps, c.final_softcap)
        return be.to_numpy(logits).astype(np.float32, copy=False)

    def stream(self, prompt, max_new_tokens=64, temperature=0.0, top_k=None, top_p=None,
               min_p=None, repetition_penalty=1.0, seed=None, stop=None, stop_ids=None,
               speculative=False):
        """Yield the continuation of `prompt` as pieces of text (temperature 0 = greedy).

        A list of prompts is decoded together: then (i, piece) pairs are yielded, i the index
        of the prompt. speculative=True (or a number of draft tokens) drafts by prompt lookup
        and verifies the drafts in one forward; the output is distributed as without it
        (`minigemma.text.speculative`). Every row gets its own sampler with this seed.
        """
        prompts = _prompt_list(prompt)
        for p in prompts:
            if not isinstance(p, str) or not p:
                raise ValueError("the prompt is empty: give some text to continue")
        tokenizer = self._require_tokenizer()
        sampling = SamplingParams(temperature, top_k, top_p, min_p, repetition_penalty, seed)
        pieces = self._stream_ids([tokenizer.encode(p) for p in prompts], max_new_tokens,
                                  sampling, stop, stop_ids, speculative)
        if isinstance(prompt, str):
            return (piece for _, piece, _ in pieces if piece)
        return ((i, piece) for i, piece, _ in pieces if piece)

    def generate(self, prompt, max_new_tokens=64, logprobs=None, **kwargs):
        """The continuation of `prompt` (new text only) as one string; a list of prompts gives
        a list of strings, decoded together. See `stream`.

        logprobs=k: returns (text, tokens) instead, `tokens` a list of
        `minigemma.text.generation.NewToken` (id, its log-probability and the k most likely
        ids with theirs) for every generated token, a token completing a stop string included.
        """
        prompts = _prompt_list(prompt)
        for p in prompts:
            if not isinstance(p, str) or not p:
                raise ValueError("the prompt is empty: give some text to continue")
        tokenizer = self._require_tokenizer()
        sampling = {k: kwargs.pop(k) for k in list(kwargs) if k in SAMPLING_ARGS}
        results = self._collect(self._stream_ids(
            [tokenizer.encode(p) for p in prompts], max_new_tokens, SamplingParams(**sampling),
            logprobs=logprobs, **kwargs), len(prompts), logprobs)
        return results[0] if isinstance(prompt, str) else results

    def generate_ids(self, ids, max_new_tokens=64, stop_ids=None, speculative=False,
                     logprobs=None, **sampling):
        """New token ids after `ids` (a list of ids, BOS first), no tokenizer needed; a list of
        such lists gives a list of results, decoded together. Stops at `stop_ids` (default: the
        tokenizer's EOS and <end_of_turn>, or the config's eos_id), which are not returned.
        logprobs=k: (ids, [NewToken]) per prompt, as in `generate`."""
        if not isinstance(ids, (list, tuple, np.ndarray)):
            raise TypeError(f"ids must be a list of token ids (or a list of such lists), got "
                            f"{type(ids).__name__}")
        batch = len(ids) > 0 and not isinstance(ids[0], (int, np.integer))
        rows = [list(r) for r in ids] if batch else [list(ids)]
        if stop_ids is None:
            stop_ids = (default_stop_ids(self.tokenizer) if self.tokenizer is not None
                        else {self.config.eos_id})
        self.last_stats = GenerationStats()
        out = [[] for _ in rows]
        gen = BatchGenerator(self, speculative, logprobs, self.last_stats)
        events = gen.add([Row(r, max_new_tokens, Sampler(SamplingParams(**sampling)),
                              set(stop_ids)) for r in rows])
        while True:
            for event in events:
                out[event.row].append(event)
            if not gen.active:
                break
            events = gen.step()
        results = [[e.token for e in row] if logprobs is None else ([e.token for e in row], row)
                   for row in out]
        return results if batch else results[0]

    def chat(self, messages, max_new_tokens=256, stream=False, **kwargs):
        """The model's reply to a conversation in Gemma's turn format (`chat_prompt`).

        A list of conversations gives a list of replies, decoded together (with stream=True:
        (i, piece) pairs). logprobs=k as in `generate`."""
        if not isinstance(messages, (list, tuple)):
            raise TypeError(f"chat takes a list of messages (or a list of such lists), got "
                            f"{type(messages).__name__}")
        batch = len(messages) > 0 and not isinstance(messages[0], dict)
        conversations = list(messages) if batch else [messages]
        ids = [self._chat_ids(m) for m in conversations]
        logprobs = kwargs.pop("logprobs", None)
        sampling = {k: kwargs.pop(k) for k in list(kwargs) if k in SAMPLING_ARGS}
        pieces = self._stream_ids(ids, max_new_tokens, SamplingParams(**sampling),
                                  logprobs=logprobs, **kwargs)
        if stream:
            if batch:
                return ((i, piece) for i, piece, _ in pieces if piece)
            return (piece for _, piece, _ in pieces if piece)
        results = self._collect(pieces, len(ids), logprobs)
        return results if batch else results[0]

    def score(self, text):
        """Per-token log-probabilities of `text` (a string, encoded with BOS, or token ids):
        np.ndarray [T − 1] float64, entry t = log p(token t+1 | tokens 0…t). See
        `minigemma.text.scoring` for perplexity over long texts."""
        from minigemma.text.scoring import token_logprobs
        ids = (self._require_tokenizer().encode(text) if isinstance(text, str)
               else self._id_row(text)[0].tolist())
        return token_logprobs(self, ids)

    def _chat_ids(self, messages):
        """The token ids of a conversation in Gemma's turn format, ready for the reply: the
        messages' text is plain text, only the template's markup becomes control tokens."""
        return chat_ids(self._require_tokenizer(), messages)

    def _stream_ids(self, prompts_ids, max_new_tokens, sampling, stop=None, stop_ids=None,
                    speculative=False, logprobs=None):
        self.last_stats = GenerationStats()
        return stream_texts(self, prompts_ids, max_new_tokens=max_new_tokens, stop=stop,
                            stop_ids=stop_ids, sampling=sampling, speculative=speculative,
                            logprobs=logprobs, stats=self.last_stats)

    @staticmethod
    def _collect(pieces, n, logprobs):
        """(row, piece, event) triples -> n texts, or n (text, [NewToken]) with logprobs."""
        texts, tokens = [""] * n, [[] for _ in range(n)]
        for i, piece, event in pieces:
            texts[i] += piece
            if event is not None:
                tokens[i].append(event)
        return texts if logprobs is None else list(zip(texts, tokens))

    def _id_row(self, ids):
        """A non-empty 1-D sequence of token ids, integers in [0, V) -> int64 [1, T]."""
        V = self.config.vocab_size
        if isinstance(ids, np.ndarray):
            if ids.ndim != 1 or ids.size == 0:
                raise ValueError(f"ids must be a non-empty 1-D sequence of token ids, got shape "
                                 f"{ids.shape}")
            if not np.issubdtype(ids.dtype, np.integer):
                raise TypeError(f"ids must be integers, got an array of {ids.dtype}")
            values = ids
        else:
            if not isinstance(ids, (list, tuple, range)):
                raise TypeError(f"ids must be a sequence of token ids, got {type(ids).__name__}")
            values = list(ids)
            if not values or any(isinstance(i, (list, tuple, np.ndarray)) for i in values):
                raise ValueError("ids must be a non-empty 1-D sequence of token ids")
            wrong = [i for i in values if isinstance(i, (bool, np.bool_))
                     or not isinstance(i, (int, np.integer))]
            if wrong:
                raise TypeError(f"ids must be integers, got {wrong[0]!r}")
        bad = next((int(i) for i in values if not 0 <= i < V), None)
        if bad is not None:
            raise ValueError(f"ids must be token ids in [0, {V}), got {bad}")
        return np.asarray(values, dtype=np.int64)[None]

    def _require_tokenizer(self):
        if self.tokenizer is None:
            raise ValueError(f"{self.path}: this checkpoint has no tokenizer.model, so it can "
                             f"only compute logits from token ids")
        return self.tokenizer

    def __repr__(self):
        c = self.config
        return (f"<minigemma.Model {c.family} d_model={c.d_model} layers={c.num_layers} "
                f"backend={self.backend.name} path={self.path!r}>")


def network_class(config):
    """The network that runs `config`: Transformer (Gemma 1/2/3) or Griffin (RecurrentGemma)."""
    if isinstance(config, GemmaConfig):
        return Transformer
    from minigemma.models.griffin import Griffin
    return Griffin


def _prompt_list(prompt):
    """A prompt or a list of prompts -> a list of prompts (TypeError for anything else)."""
    if isinstance(prompt, str):
        return [prompt]
    if not isinstance(prompt, (list, tuple)):
        raise TypeError(f"the prompt must be a str or a list of str, got {type(prompt).__name__}")
    return list(prompt)


def load(path=None, backend="auto", max_context=None):
    """Load a model onto a backend (weights moved once, here); "auto": the fastest that works
    here (CuPy on a working GPU, else Numba, else NumPy; minigemma.backends.AUTO_ORDER).

    path: a minigemma checkpoint folder, or a GGUF file or HF folder, converted on first use
    into the cache and reused while the source's content is unchanged (`checkpoint_folder`).
    """
    if path is None:
        from minigemma.tools.embedded import default_model_path
        path = default_model_path()
    path = checkpoint_folder(os.fspath(path))
    if not isinstance(backend, (str, Backend)):
        raise TypeError(f"backend must be a backend name (auto, "
                        f"{', '.join(available_backends())}) or a Backend, got {backend!r}")
    be = get_backend(backend)
    meta, config, tensors = read_checkpoint(path)  # the config's own network's tensors
    if max_context is not None:
        if isinstance(max_context, bool) or not isinstance(max_context, (int, np.integer)) \
                or max_context < 1:
            raise ValueError(f"max_context must be a positive integer or None, got "
                             f"{max_context!r}")
        config = config.replace(max_position=min(config.max_position, int(max_context)))
    params = {name: be.prepare_weight(weight) for name, weight in tensors}
    # the dtype the embedding was released in; each family decides what it does to the scale
    network = network_class(config)(config, params, be,
                                    embedding_dtype=meta.get("embedding_dtype", "float32"))
    return Model(network, read_tokenizer(path, config), meta, path)


def checkpoint_folder(path, progress=True):
    """A minigemma checkpoint folder for `path`: the folder itself, or for a .gguf file or an
    HF folder its conversion under the cache (minigemma.tools.embedded), named after the
    source and keyed by the sha256 of the files the converter reads, so it is converted once
    and converted again only when those files change."""
    from minigemma.formats.native import CONFIG_FILE
    if os.path.isdir(path):
        try:  # a minigemma config.json has a "format" key (HF's never does)
            if "format" in read_json(os.path.join(path, CONFIG_FILE)):
                return path
        except (OSError, ValueError):
            return path  # not readable as either: read_checkpoint says what is wrong
        files = sorted(f for f in os.listdir(path) if f == CONFIG_FILE or f.endswith(
            (".safetensors", ".safetensors.index.json")) or f == "tokenizer.model")
    elif path.endswith(".gguf") and os.path.isfile(path):
        path, files = os.path.dirname(os.path.abspath(path)), [os.path.basename(path)]
    else:
        return path
    from minigemma.formats.convert import convert
    from minigemma.tools.embedded import converted_once
    digest = hashlib.sha256()
    for name in files:  # the name and the bytes of each file, in name order
        digest.update(name.encode() + b"\0")
        with open(regular_file(os.path.join(path, name)), "rb") as f:  # a FIFO would block
            for block in iter(lambda: f.read(1 << 24), b""):
                digest.update(block)
    sha = digest.hexdigest()
    source = os.path.join(path, files[0]) if files[0].endswith(".gguf") else path
    stem = os.path.basename(os.path.normpath(source)).removesuffix(".gguf")
    name = os.path.join("converted", f"{stem}-{sha[:16]}")

    def build(folder, extra_meta):
        if progress:
            print(f"minigemma: converting {source} into {folder} (once)", file=sys.stderr)
        convert(source, folder, progress=progress, overwrite=True, extra_meta=extra_meta)
    return converted_once(name, sha, build)


def random_model(config, seed=0, backend="numpy", tokenizer=None):
    """A Model of `config` with random weights (minigemma.models.random_weights): to study a
    network's shapes, caches and speed without a checkpoint. Reproducible from `seed`."""
    from minigemma.models.random_weights import random_params
    be = get_backend(backend)
    cls = network_class(config)
    params = {name: be.prepare_weight(w)
              for name, w in random_params(cls.parameter_shapes(config), seed).items()}
    return Model(cls(config, params, be), tokenizer)

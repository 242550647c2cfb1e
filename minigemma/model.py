"""A loaded model: network + backend + tokenizer, behind the public interface.

    model = minigemma.load(path, backend="numpy")
    model.logits(ids)                      # np.ndarray [T, V] float32
    model.forward(ids, positions, cache)   # backend arrays, [B, T] in, ([B, T, V], cache) out
    model.network                          # Transformer (Gemma 1/2/3) or Griffin (RecurrentGemma)

Both networks have one surface: `config`, `params`, `backend`, `embed_scale`, the static
`parameter_shapes(config)` and `embedding_scale_for(config, embedding_dtype)`,
`new_cache(batch, max_len)`, `forward(ids, positions, cache, last_only)`,
`layer(i, h, positions, layer_cache)` and the blocks of a layer (`attention_block`,
`mlp_block`, and Griffin's `recurrent_block`).
"""
import os

import numpy as np

from minigemma.backends import get_backend
from minigemma.formats.native import TOKENIZER_FILE, read_checkpoint
from minigemma.models.blocks import tied_head
from minigemma.models.config import GemmaConfig
from minigemma.models.gemma import Transformer
from minigemma.models.kv_cache import token_positions
from minigemma.text.generation import GenerationStats, chat_prompt, stream_text
from minigemma.text.sampling import SamplingParams

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
        return self.backend.to_numpy(logits[0]).astype(np.float32, copy=False)

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
               min_p=None, repetition_penalty=1.0, seed=None, stop=None, stop_ids=None):
        """Yield the continuation of `prompt` as pieces of text (temperature 0 = greedy)."""
        if not isinstance(prompt, str) or not prompt:
            raise ValueError("the prompt is empty: give some text to continue")
        ids = self._require_tokenizer().encode(prompt)
        return self._stream_ids(ids, max_new_tokens, SamplingParams(
            temperature, top_k, top_p, min_p, repetition_penalty, seed), stop, stop_ids)

    def generate(self, prompt, max_new_tokens=64, **kwargs):
        """The continuation of `prompt` (new text only) as one string; see `stream`."""
        return "".join(self.stream(prompt, max_new_tokens, **kwargs))

    def chat(self, messages, max_new_tokens=256, stream=False, **kwargs):
        """The model's reply to a conversation in Gemma's turn format (`chat_prompt`)."""
        ids = self._require_tokenizer().encode(chat_prompt(messages), parse_special=True)
        sampling = {k: kwargs.pop(k) for k in list(kwargs) if k in SAMPLING_ARGS}
        pieces = self._stream_ids(ids, max_new_tokens, SamplingParams(**sampling), **kwargs)
        return pieces if stream else "".join(pieces)

    def _stream_ids(self, ids, max_new_tokens, sampling, stop=None, stop_ids=None):
        self.last_stats = GenerationStats()
        return stream_text(self, ids, max_new_tokens=max_new_tokens, stop=stop,
                           stop_ids=stop_ids, sampling=sampling, stats=self.last_stats)

    @staticmethod
    def _id_row(ids):
        """A non-empty 1-D sequence of token ids -> int64 [1, T]."""
        ids = np.asarray(ids, dtype=np.int64)
        if ids.ndim != 1 or ids.size == 0:
            raise ValueError(f"expected a non-empty 1-D sequence of token ids, got shape "
                             f"{ids.shape}")
        return ids[None]

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


def load(path=None, backend="numpy", max_context=None):
    """Load a minigemma checkpoint folder onto a backend (weights moved once, here)."""
    if path is None:
        from minigemma.tools.embedded import default_model_path
        path = default_model_path()
    path = os.fspath(path)
    be = get_backend(backend)
    meta, config, tensors = read_checkpoint(path)  # the config's own network's tensors
    if max_context is not None:
        config = config.replace(max_position=min(config.max_position, int(max_context)))
    params = {name: be.prepare_weight(weight) for name, weight in tensors}
    # the dtype the embedding was released in; each family decides what it does to the scale
    network = network_class(config)(config, params, be,
                                    embedding_dtype=meta.get("embedding_dtype", "float32"))
    tokenizer = None
    tok_path = os.path.join(path, TOKENIZER_FILE)
    if os.path.isfile(tok_path):
        from minigemma.text.tokenizer import Tokenizer
        tokenizer = Tokenizer.from_file(tok_path)
    return Model(network, tokenizer, meta, path)


def random_model(config, seed=0, backend="numpy", tokenizer=None):
    """A Model of `config` with random weights (minigemma.models.random_weights): to study a
    network's shapes, caches and speed without a checkpoint. Reproducible from `seed`."""
    from minigemma.models.random_weights import random_params
    be = get_backend(backend)
    cls = network_class(config)
    params = {name: be.prepare_weight(w)
              for name, w in random_params(cls.parameter_shapes(config), seed).items()}
    return Model(cls(config, params, be), tokenizer)

"""A loaded model: network + backend + tokenizer, behind the public interface.

    model = minigemma.load(path, backend="numpy")
    model.logits(ids)                      # np.ndarray [T, V] float32
    model.forward(ids, positions, cache)   # backend arrays, [B, T] in, ([B, T, V], cache) out
"""
import os

import numpy as np

from .backends import get_backend
from .checkpoints.format import TOKENIZER_FILE, read_checkpoint
from .transformer import Transformer, parameter_shapes


class Model:
    def __init__(self, network, tokenizer=None, meta=None, path=None):
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
        ids = np.asarray(ids, dtype=np.int64)
        if ids.ndim != 1 or ids.size == 0:
            raise ValueError(f"logits() takes a non-empty 1-D sequence of token ids, got shape "
                             f"{ids.shape}")
        logits, _ = self.forward(self.backend.asarray(ids[None]))
        return self.backend.to_numpy(logits[0]).astype(np.float32, copy=False)

    def __repr__(self):
        c = self.config
        return (f"<minigemma.Model {c.family} d_model={c.d_model} layers={c.num_layers} "
                f"backend={self.backend.name} path={self.path!r}>")


def load(path=None, backend="numpy", max_context=None):
    """Load a minigemma checkpoint folder onto a backend (weights moved once, here)."""
    if path is None:
        from .embedded import default_model_path
        path = default_model_path()
    path = os.fspath(path)
    be = get_backend(backend)
    meta, config, tensors = read_checkpoint(path, parameter_shapes)
    if max_context is not None:
        config = config.replace(max_position=min(config.max_position, int(max_context)))
    params = {name: be.prepare_weight(weight) for name, weight in tensors}
    network = Transformer(config, params, be, meta.get("embedding_dtype", "float32"))
    tokenizer = None
    tok_path = os.path.join(path, TOKENIZER_FILE)
    if os.path.isfile(tok_path):
        from .tokenizer import Tokenizer
        tokenizer = Tokenizer.from_file(tok_path)
    return Model(network, tokenizer, meta, path)

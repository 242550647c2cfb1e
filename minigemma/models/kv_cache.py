"""Key/value caches for decoding: a ring buffer on local layers, a flat buffer on global ones.

A local layer with window W only ever reads the last W keys, so it keeps W slots and writes the
token at position p into slot p mod W. A global layer keeps one slot per position up to the
cache's `max_len`, allocated up front. Every slot remembers the position of its key (−1: empty),
and attention builds its mask from those positions, so slot order never matters.

The cache is a small container passed into `forward` and returned by it; its arrays are updated
in place (copying them each step would cost a full cache read and write per token). Its size
for a given context: `minigemma.models.decode_state.decode_state_bytes`.
"""
from dataclasses import dataclass, field

from minigemma.ops.attention import EMPTY_SLOT


@dataclass
class LayerKV:
    keys: object  # [B, S, K, H] float32 (post-RoPE keys)
    values: object  # [B, S, K, H]
    positions: object  # [B, S] int64, EMPTY_SLOT where nothing is stored
    ring: bool  # True: S = window, slot = position mod S
    window: int = None  # keys a query sees, its own included (None: all, or not known)

    def update(self, k, v, pos, xp):
        """Store new keys; return (keys, values, key positions) the new queries attend to.

        k, v [B, T, K, H]; pos [B, T]. A ring layer returns its old slots followed by all T new
        keys (the chunk may be longer than the window), then keeps only the last S of them.
        For one new token per row, when the window is at most S, it writes first and returns
        the ring itself: the slot of position p held p − S or older, which the query at p may
        not see (p − (p − S) = S ≥ window), so nothing it attends to is lost, and no S-slot copy
        is made per layer and step. (A Griffin ring of W slots under the official convention,
        window W + 1, does see p − W: it takes the copying path.)
        """
        B, S = self.positions.shape
        batch = xp.arange(B)[:, None]  # [B, 1]
        if self.ring and k.shape[1] == 1 and self.window is not None and self.window <= S:
            slots = pos % S  # [B, 1]
            self.keys[batch, slots] = k
            self.values[batch, slots] = v
            self.positions[batch, slots] = pos
            return self.keys, self.values, self.positions
        if self.ring:
            keys = xp.concatenate([self.keys, k], axis=1)  # [B, S + T, K, H]
            values = xp.concatenate([self.values, v], axis=1)
            key_pos = xp.concatenate([self.positions, pos], axis=1)  # [B, S + T]
            keep = slice(max(0, k.shape[1] - S), None)  # the last S new tokens fit the ring
            slots = pos[:, keep] % S
            self.keys[batch, slots] = k[:, keep]
            self.values[batch, slots] = v[:, keep]
            self.positions[batch, slots] = pos[:, keep]
            return keys, values, key_pos
        if int(pos.max()) >= S:
            raise ValueError(f"position {int(pos.max())} does not fit a cache of {S} positions; "
                             f"create the cache with a larger max_len")
        self.keys[batch, pos] = k
        self.values[batch, pos] = v
        self.positions[batch, pos] = pos
        end = int(pos.max()) + 1  # attend over the filled prefix only
        return self.keys[:, :end], self.values[:, :end], self.positions[:, :end]


def new_layer_kv(batch, slots, num_kv_heads, head_dim, ring, xp, window=None):
    """An empty LayerKV: `slots` zero keys and values [B, S, K, H] float32, every slot empty;
    `window`: the layer's attention window (None: global)."""
    shape = (batch, slots, num_kv_heads, head_dim)
    return LayerKV(keys=xp.zeros(shape, dtype=xp.float32),
                   values=xp.zeros(shape, dtype=xp.float32),
                   positions=xp.full((batch, slots), EMPTY_SLOT, dtype=xp.int64), ring=ring,
                   window=window)


@dataclass
class KVCache:
    layers: list  # LayerKV, one per layer
    batch: int
    max_len: int
    next_position: int = 0  # where the next token goes when positions are not given
    meta: dict = field(default_factory=dict)

    def nbytes(self):
        return sum(int(a.nbytes) for layer in self.layers
                   for a in (layer.keys, layer.values, layer.positions))


def new_kv_cache(config, batch, max_len, xp):
    """An empty cache for a GemmaConfig: ring buffers of the window on local layers."""
    if max_len > config.max_position:
        raise ValueError(f"max_len {max_len} exceeds the model's context of "
                         f"{config.max_position} positions")
    layers = []
    for i in range(config.num_layers):
        ring = config.is_local(i) and config.sliding_window < max_len
        slots = config.sliding_window if ring else max_len
        window = config.sliding_window if config.is_local(i) else None
        layers.append(new_layer_kv(batch, slots, config.num_kv_heads, config.head_dim, ring, xp,
                                   window))
    return KVCache(layers=layers, batch=batch, max_len=max_len)


def token_positions(ids, positions, cache, max_position, xp):
    """Check ids [B, T] and give each token its position -> (ids, positions [B, T] int64).

    Positions default to 0…T−1, or to continuing where `cache` stopped.
    """
    ids = xp.asarray(ids)
    if ids.ndim != 2:
        raise ValueError(f"ids must be [batch, tokens], got shape {tuple(ids.shape)}")
    B, T = ids.shape
    if positions is None:
        start = cache.next_position if cache is not None else 0
        positions = xp.broadcast_to(xp.arange(start, start + T), (B, T))
    positions = xp.asarray(positions).astype(xp.int64)
    if positions.shape != (B, T):
        raise ValueError(f"positions must be [batch, tokens] = {(B, T)}, got "
                         f"{tuple(positions.shape)}")
    if int(positions.max()) >= max_position:
        raise ValueError(f"position {int(positions.max())} is beyond the model's context of "
                         f"{max_position} tokens")
    return ids, positions

"""The decoding cache of a batch being generated: rows joined and dropped, room grown, drafts
forgotten.

Generation keeps one cache for every row it decodes together (`minigemma.text.generation`). Its
rows hold sequences of different lengths: each row's keys sit at that row's own positions, and
the slots a row has not reached hold EMPTY_SLOT, which attention masks out
(`minigemma.ops.attention`). So rows never need padding tokens, and the cache can change shape
between steps:

    join(caches)            rows of equal slot layout, concatenated (a new request's prefill)
    take(cache, rows)       only these rows (rows that have stopped leave the batch)
    ensure_room(cache, n)   positions < n fit: flat layers grow by doubling, so a long
                            max_new_tokens costs memory only as the text grows
    forget_after(cache, p)  row b keeps positions <= p[b] (drafts rejected by speculative
                            decoding are masked out; their slots are written again later)

A windowed (local) layer only ever reads the last W keys. While the text is short it is flat (one
slot per position); once it would grow past W + spare slots it becomes a ring of W + spare slots
(slot = position mod S). The `spare` slots (`new_batch_cache(..., spare=k)`) let k rejected draft
tokens be written without overwriting a key that the next query still needs: a rejected key at
position p lands on the slot of p − S, and the next query, at most at p, reads only keys after
p − W > p − S.

Works on both caches (`KVCache`, Griffin's `GriffinCache`): every array of a layer has the batch
first. Griffin's recurrent state cannot forget a token, so `forget_after` refuses it.
"""
import dataclasses

from minigemma.models.kv_cache import KVCache, LayerKV
from minigemma.ops.attention import EMPTY_SLOT


def _arrays(layer):
    """Names of the layer's array fields (each [B, ...])."""
    return [f.name for f in dataclasses.fields(layer) if hasattr(getattr(layer, f.name), "shape")]


def _map_layers(cache, fn, batch):
    layers = [dataclasses.replace(layer, **{n: fn(getattr(layer, n)) for n in _arrays(layer)})
              for layer in cache.layers]
    return dataclasses.replace(cache, layers=layers, batch=batch, meta=dict(cache.meta))


def new_batch_cache(model, batch, capacity, spare=0):
    """An empty cache for `batch` rows with room for positions < `capacity` (grown later by
    `ensure_room`) and `spare` extra slots on every ring (see the module docstring)."""
    cache = model.new_cache(batch=batch, max_len=min(capacity, model.config.max_position))
    cache.meta["spare"] = spare
    if spare and not isinstance(cache, KVCache):
        raise ValueError("speculative decoding needs a cache that can forget rejected drafts; "
                         "RecurrentGemma's recurrent state cannot, so it decodes one token at "
                         "a time")
    xp = model.backend.xp
    window = getattr(model.config, "sliding_window", None)
    cache.layers = [_reslot(layer, window + spare, True, xp) if spare and layer.ring else layer
                    for layer in cache.layers]
    return cache


def empty_like(cache, batch, xp):
    """A cache of `batch` rows with the slot layout of `cache`, every slot empty."""
    def empty(a):
        shape = (batch,) + tuple(a.shape[1:])
        if a.dtype == xp.int64:  # key positions
            return xp.full(shape, EMPTY_SLOT, dtype=a.dtype)
        return xp.zeros(shape, dtype=a.dtype)
    out = _map_layers(cache, empty, batch)
    out.next_position = 0
    return out


def join(caches, xp):
    """The rows of several caches of one slot layout, in order, as one cache."""
    first = caches[0]
    layers = []
    for i, layer in enumerate(first.layers):
        arrays = {n: xp.concatenate([getattr(c.layers[i], n) for c in caches], axis=0)
                  for n in _arrays(layer)}
        layers.append(dataclasses.replace(layer, **arrays))
    return dataclasses.replace(first, layers=layers, batch=sum(c.batch for c in caches),
                               meta=dict(first.meta))


def take(cache, rows, xp):
    """The cache of the given rows only (a copy), in the given order."""
    index = xp.asarray(rows, dtype=xp.int64)
    return _map_layers(cache, lambda a: a[index], len(rows))


def ensure_room(cache, config, needed, xp):
    """Grow flat layers so that positions < `needed` fit (doubling, at most the context). A flat
    windowed layer that would outgrow W + spare slots becomes a ring of W + spare slots."""
    if not isinstance(cache, KVCache):
        return cache  # Griffin: a fixed-size state
    spare = cache.meta.get("spare", 0)
    for i, layer in enumerate(cache.layers):
        slots = layer.positions.shape[1]
        if layer.ring or needed <= slots:
            continue
        grown = min(max(needed, 2 * slots), config.max_position)
        if config.is_local(i) and grown > config.sliding_window + spare:
            cache.layers[i] = _reslot(layer, config.sliding_window + spare, True, xp)
        else:
            cache.layers[i] = _reslot(layer, grown, False, xp)
    cache.max_len = max(cache.max_len, min(needed, config.max_position))
    return cache


def forget_after(cache, last_kept, xp):
    """Row b forgets every key after position last_kept[b] (in place)."""
    if not isinstance(cache, KVCache):
        raise ValueError("RecurrentGemma's recurrent state cannot forget tokens")
    last = xp.asarray(last_kept, dtype=xp.int64)[:, None]  # [B, 1]
    for layer in cache.layers:
        layer.positions[layer.positions > last] = EMPTY_SLOT
    return cache


def _reslot(layer, slots, ring, xp):
    """`layer`'s keys moved into a new layer of `slots` slots: a ring (slot = position mod
    slots, keeping each row's latest `slots` positions) or flat (slot = position)."""
    B, _, K, H = layer.keys.shape
    out = LayerKV(keys=xp.zeros((B, slots, K, H), dtype=layer.keys.dtype),
                  values=xp.zeros((B, slots, K, H), dtype=layer.values.dtype),
                  positions=xp.full((B, slots), EMPTY_SLOT, dtype=xp.int64), ring=ring,
                  window=layer.window)
    pos = layer.positions
    keep = pos != EMPTY_SLOT
    if ring:  # only the latest `slots` positions of each row fit, and they map to distinct slots
        keep &= pos > pos.max(axis=1, keepdims=True) - slots
    rows, old = xp.nonzero(keep)
    new = pos[rows, old] % slots if ring else pos[rows, old]
    out.keys[rows, new] = layer.keys[rows, old]
    out.values[rows, new] = layer.values[rows, old]
    out.positions[rows, new] = pos[rows, old]
    return out

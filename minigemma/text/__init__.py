"""From logits to text.

    tokenizer    Gemma's SentencePiece tokenizer (from a tokenizer.model or a GGUF vocabulary)
    sampling     repetition penalty, temperature, top-k, top-p, min-p
    generation   prefill, cached decoding of a batch of rows, stop rules, streaming, the chat
                 turn format
    batch_cache  the cache of a batch: rows joined and dropped, room grown, drafts forgotten
    speculative  exact speculative decoding: drafts by prompt lookup, the acceptance rule
    scoring      per-token log-probabilities and sliding-window perplexity
"""

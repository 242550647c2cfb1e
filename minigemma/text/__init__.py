"""From logits to text.

    tokenizer   Gemma's SentencePiece tokenizer (from a tokenizer.model or a GGUF vocabulary)
    sampling    repetition penalty, temperature, top-k, top-p, min-p
    generation  prefill, cached decoding, stop rules, streaming, the chat turn format
"""

"""What the command line runs.

    cli       `minigemma <command>`
    bench     `minigemma bench`: every backend beside HF transformers, in one run
    embedded  the default model shipped on PyPI, converted once into the cache
    server    `minigemma serve`: an OpenAI-compatible HTTP server that batches its requests
    bench_generation  `minigemma bench --generation`: batching and speculative decoding
"""

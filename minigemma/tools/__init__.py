"""What the command line runs.

    cli       `minigemma <command>`
    bench     `minigemma bench`: every backend beside HF transformers, in one run
    embedded  the default model shipped on PyPI, converted once into the cache
"""

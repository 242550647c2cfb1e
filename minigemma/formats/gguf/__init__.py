"""llama.cpp's GGUF format, all of it here.

    blocks      the GGML block weight kinds (Q8_0, Q5_0, Q4_0, Q4_K, Q6_K) in plain NumPy
    layout      the file's header and tensor layout, checked before the gguf package parses it
    reader      opening a file; hyperparameters and tensors of a Gemma GGUF under minigemma's names
    vocabulary  the GGUF vocabulary as a SentencePiece model (for the tokenizer)
    convert     a GGUF file into a ConvertedModel, for minigemma's native format
"""

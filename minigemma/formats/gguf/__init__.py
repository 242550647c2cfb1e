"""llama.cpp's GGUF format.

    blocks   the GGML block weight kinds (Q8_0, Q5_0, Q4_0, Q4_K, Q6_K) in plain NumPy
    reader   hyperparameters and tensors of a Gemma GGUF file under minigemma's names
    convert  a GGUF file into minigemma's native format
"""

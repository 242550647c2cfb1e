"""Checkpoint formats: minigemma's own, and every source converted into it.

    native          minigemma's folder format (versioned config.json, safetensors, tokenizer)
    safetensors     safetensors files, tensor by tensor
    hf              HF transformers folders of Gemma 1 / 2 / 3
    hf_griffin      HF transformers folders of RecurrentGemma
    recurrentgemma  the official recurrentgemma PyTorch state dicts
    gguf/           llama.cpp's GGUF: metadata, tensors and their block kinds
    convert         `minigemma convert SRC DST`: any of the above into the native format
"""

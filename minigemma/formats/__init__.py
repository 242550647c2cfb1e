"""Checkpoint formats: minigemma's own, and every source converted into it.

    native          minigemma's folder format (versioned config.json, safetensors, tokenizer);
                    its write_checkpoint is the only code that writes a checkpoint
    files           opening a checkpoint's files (regular files, strict JSON), errors naming them
    safetensors     safetensors files, tensor by tensor, with the safetensors library
    conversion      what every converter returns (ConvertedModel) and its strict tensor check
    hf_config       HF config.json -> GemmaConfig / GriffinConfig
    hf              HF transformers folders of Gemma 1 / 2 / 3
    hf_griffin      HF transformers folders of RecurrentGemma
    recurrentgemma  the official recurrentgemma PyTorch state dicts
    gguf/           llama.cpp's GGUF: metadata, tensors, block kinds and vocabulary
    convert         `minigemma convert SRC DST`: any of the above into the native format
    export_hf       `minigemma export DIR --to hf OUT`: the native format as an HF folder
"""

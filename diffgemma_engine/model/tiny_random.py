"""The ``tiny-random`` built-in model: seeded random weights and a byte-level tokenizer built in code.

It has the real model's class, special-token ids (``<pad>`` 0, ``<eos>`` 1, ``<bos>`` 2,
``<|tool_response>`` 50, ``<|turn>`` 105, ``<turn|>`` 106), chat format and generation config, at a
size that runs in milliseconds on a CPU. It needs no files and no network.
"""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    DiffusionGemmaConfig,
    DiffusionGemmaForBlockDiffusion,
    PreTrainedTokenizerFast,
)
from transformers.models.diffusion_gemma.generation_diffusion_gemma import (
    DiffusionGemmaGenerationConfig,
    EntropyBoundSamplerConfig,
)

SPECIAL_TOKENS = {0: "<pad>", 1: "<eos>", 2: "<bos>", 3: "<unk>", 4: "<mask>", 50: "<|tool_response>",
                  105: "<|turn>", 106: "<turn|>"}
BYTE_OFFSET = 128
VOCAB_SIZE = BYTE_OFFSET + 256
EOS_TOKEN_IDS = [1, 106, 50]

CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "<|turn>{{ role }}\n{{ message['content'] | trim }}<turn|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|turn>model\n{% endif %}"
)


def build_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level tokenizer: every UTF-8 byte is one token, plus Gemma's special ids."""
    vocab = {SPECIAL_TOKENS.get(i, f"<unused{i}>"): i for i in range(BYTE_OFFSET)}
    for byte, char in enumerate(_byte_alphabet()):
        vocab[char] = BYTE_OFFSET + byte
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<bos>",
        eos_token="<eos>",
        unk_token="<unk>",
        pad_token="<pad>",
        mask_token="<mask>",
        additional_special_tokens=[token for token, i in vocab.items() if i < BYTE_OFFSET and i > 4],
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_config(canvas_length: int = 32, **text_overrides) -> DiffusionGemmaConfig:
    """A small DiffusionGemma config with the real layout (sliding + full attention, MoE, self-conditioning)."""
    text_config = dict(
        vocab_size=VOCAB_SIZE,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        global_head_dim=32,
        sliding_window=64,
        num_experts=4,
        top_k_experts=2,
        moe_intermediate_size=32,
        enable_moe_block=True,
        max_position_embeddings=1024,
        layer_types=["sliding_attention", "full_attention"],
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=2,
    )
    text_config.update(text_overrides)
    vision_config = dict(
        model_type="gemma4_vision",
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=8,
        position_embedding_size=64,
        patch_size=4,
    )
    return DiffusionGemmaConfig(text_config=text_config, vision_config=vision_config, canvas_length=canvas_length)


def build_real_layout_config(canvas_length: int = 16, **text_overrides) -> DiffusionGemmaConfig:
    """A small config with the published checkpoint's layer layout (``checkpoint.REAL_CHECKPOINT_CONFIG``):
    five sliding-window layers to one full-attention layer, sliding layers with 2 KV heads x 16, full layers
    with their own single KV head x 32 whose keys and values come from one projection (``attention_k_eq_v``),
    the real rope settings (default rope on sliding layers, proportional rope with a quarter of the dims
    rotated on full layers), MoE with top-k routing, and a 64-token window that a 1,500-token prompt
    crosses many times. Small enough for CPU tests in bf16 and fp32."""
    text_config = dict(
        num_hidden_layers=6,
        layer_types=None,  # transformers' own 5:1 pattern, the last layer full
        num_key_value_heads=2,
        num_global_key_value_heads=1,
        head_dim=16,
        global_head_dim=32,
        attention_k_eq_v=True,
        sliding_window=64,
        max_position_embeddings=4096,
    )
    text_config.update(text_overrides)
    return build_config(canvas_length=canvas_length, **text_config)


def build_generation_config() -> DiffusionGemmaGenerationConfig:
    """The real checkpoint's generation config format and defaults."""
    return DiffusionGemmaGenerationConfig(
        max_new_tokens=256,
        max_denoising_steps=48,
        sampler_config=EntropyBoundSamplerConfig(entropy_bound=0.1),
        t_min=0.4,
        t_max=0.8,
        stability_threshold=1,
        confidence_threshold=0.005,
        eos_token_id=list(EOS_TOKEN_IDS),
        pad_token_id=0,
        bos_token_id=2,
    )


def build_model(config: DiffusionGemmaConfig | None = None, seed: int = 0,
                device: str | torch.device = "cpu") -> DiffusionGemmaForBlockDiffusion:  # fmt: skip
    """Seeded random weights, initialised on ``device`` (fast for billions of weights on a GPU); the
    global RNG is left untouched. Embeddings are scaled up so that the (tied) output distribution is
    peaked enough for some positions to be confident."""
    config = config or build_config()
    device = torch.device(device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), device:
        torch.manual_seed(seed)
        model = DiffusionGemmaForBlockDiffusion(config)
        with torch.no_grad():
            embedding = model.get_input_embeddings().weight
            embedding.normal_(0.0, 1.0)
    model.generation_config = build_generation_config()
    return model.eval()


def _byte_alphabet() -> list[str]:
    return [chr(codepoint) for codepoint in _bytes_to_unicode()]


def _bytes_to_unicode() -> list[int]:
    """The GPT-2 byte-to-printable-codepoint table, as a list indexed by byte value."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    table, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            table[byte] = byte
        else:
            table[byte] = 256 + extra
            extra += 1
    return [table[byte] for byte in range(256)]

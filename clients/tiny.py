"""A tiny random-weight Llama model with a real tokenizer, built fully offline.

Tests need a model that loads, generates and trains in well under a second, without any
download. Weights are random, so its text is gibberish; what matters is that every code path
(chat template, padding, stop strings, logprobs, SFT) behaves exactly as with a real model.
"""
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

# SmolLM2-135M-Instruct's template verbatim, so tiny-random renders chats like the real model.
CHATML_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
    "<|im_end|>\\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + message['content']"
    " + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# Same roles as in SmolLM2: <|im_end|> ends a turn and is the eos; <pad> is distinct from eos so
# that SFT collators never mask a real end-of-turn token as padding.
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>"]

_SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "What is the capital of France? The capital of France is Paris.",
    "Please answer the question with a short sentence.",
    "You are a helpful assistant. The user asks and the assistant answers.",
    "Water boils at one hundred degrees and freezes at zero degrees.",
    "She said yes, he said no, and they both laughed about it.",
    "Read the text, think step by step, then give the final answer.",
    "A list of numbers, words and names: apple, banana, cherry, Alice, Bob.",
]


def _training_text() -> list[str]:
    """A small fixed corpus of English and arithmetic, so the BPE learns useful merges."""
    lines = list(_SENTENCES)
    for a in range(0, 40):
        b = (a * 7 + 3) % 50
        lines.append(f"{a} + {b} = {a + b}. {a} times {b} is {a * b}.")
    return lines * 3


def build_tokenizer(vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE in memory: no files, no hub, deterministic for a fixed corpus."""
    bpe = Tokenizer(models.BPE())
    # Byte-level pre-tokenization makes every string encodable (no unknown tokens) like GPT-2/SmolLM.
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_training_text(), trainer=trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        unk_token="<|endoftext|>",
        pad_token="<pad>",
    )
    tok.chat_template = CHATML_TEMPLATE
    return tok


def build_tiny_model(path: Path, seed: int = 0) -> Path:
    """Write a tiny random LlamaForCausalLM and its tokenizer to `path`; return `path`."""
    path = Path(path)
    tok = build_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=1024,
        # A wide init makes next-token distributions peaked, so greedy choices are not
        # near-ties that float noise (e.g. from padding) could flip in tests.
        initializer_range=0.5,
        tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    # A private generator keeps the build deterministic without touching the global RNG.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config).to(torch.float32)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path

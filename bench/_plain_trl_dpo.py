"""The baseline of bench_train.py: a plain TRL DPO script, as a TRL user would write it.

    python bench/_plain_trl_dpo.py PAIRS.jsonl OUT --max-length 256 --batch-size 4

PAIRS.jsonl holds TRL's conversational preference rows. LoRA r 16 / alpha 32 on every linear
layer of the packaged SmolLM2-135M-Instruct, one epoch, learning rate 5e-5, seed 0, on CPU (or
CUDA when present); the reference is the base with the adapter disabled, computed every step
(TRL's default). Prints {"train_s", "loss_last"} as JSON.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from datasets import load_dataset
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
from trl import DPOConfig, DPOTrainer

from prefloop.llm._cache import smollm2_folder


class LastLoss(TrainerCallback):  # type: ignore[misc]
    def __init__(self) -> None:
        self.loss: float | None = None

    def on_log(self, args, state, control, logs=None, **kwargs):  # type: ignore[no-untyped-def]
        if logs and "loss" in logs:
            self.loss = float(logs["loss"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("pairs")
    parser.add_argument("out")
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=4)
    args = parser.parse_args()
    folder = smollm2_folder()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    cuda = torch.cuda.is_available()
    config = DPOConfig(
        output_dir=args.out,
        per_device_train_batch_size=args.batch_size,
        num_train_epochs=1,
        learning_rate=5e-5,
        max_length=args.max_length,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        seed=0,
        data_seed=0,
        use_cpu=not cuda,
        bf16=bool(cuda and torch.cuda.is_bf16_supported()),
        activation_checkpointing=False,
        disable_tqdm=True,
    )
    lora = LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM")
    last = LastLoss()
    trainer = DPOTrainer(
        model=model,
        args=config,
        train_dataset=load_dataset("json", data_files=args.pairs, split="train"),
        processing_class=tokenizer,
        peft_config=lora,
        callbacks=[last],
    )
    started = time.perf_counter()
    trainer.train()
    print(json.dumps({"train_s": round(time.perf_counter() - started, 3), "loss_last": last.loss}))


if __name__ == "__main__":
    main()

"""finetune: recipe-driven LoRA fine-tuning of Whisper on the Hugging Face stack."""

__version__ = "0.1.0"

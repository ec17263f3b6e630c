"""gradprompt's headless core. Importing it never imports torch, transformers, llama_cpp or textual."""

__version__ = "0.1.0"

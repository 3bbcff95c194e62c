"""ecglm: train, tune, evaluate and serve multimodal ECG-language models on Ray."""

__version__ = "0.1.0"

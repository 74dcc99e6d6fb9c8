"""The model: backbones (keras.applications or a scratch CNN) + head, and the fine-tuning stages."""

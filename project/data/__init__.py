"""Data: loader adapters -> data check -> saved split -> tf.data pipeline with albumentations."""

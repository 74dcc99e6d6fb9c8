"""Runtime settings: determinism, and the accelerator defaults (mixed precision, XLA and
multi-GPU), decided once per run and recorded.

Deterministic (runtime.deterministic, the default): TensorFlow's op determinism, so that the same
code, cards, data and seed on the same machine give identical numbers (the input pipeline is
built to stay parallel under it: see project.data.pipeline).

On a GPU, unless the card says otherwise: bf16 mixed precision where the GPU supports it
(compute capability >= 8.0), float16 with loss scaling otherwise, XLA compilation. On a CPU
nothing that slows it down: float32, no XLA (compiling costs more than it saves on short runs).
"""

import contextlib

import keras
import tensorflow as tf


def _gpu_capability():
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return None
    details = tf.config.experimental.get_device_details(gpus[0])
    return details.get("compute_capability", (0, 0))


def choose(mixed_precision="auto", jit_compile="auto", distribution="none", deterministic=True):
    """The settings for this machine from the card's runtime values (auto: decided by the GPU):
    {'precision', 'jit_compile', 'distribution', 'device', 'replicas', 'deterministic'}."""
    capability = _gpu_capability()
    precision = mixed_precision
    if precision == "auto":
        precision = "float32" if capability is None else ("mixed_bfloat16" if capability >= (8, 0) else "mixed_float16")
    jit = jit_compile
    if jit == "auto":
        jit = capability is not None
    return {
        "precision": precision,
        "jit_compile": bool(jit),
        "distribution": distribution,
        "device": "GPU" if capability is not None else "CPU",
        "replicas": 1,
        "deterministic": deterministic,
    }


def apply(mixed_precision="auto", jit_compile="auto", distribution="none", deterministic=True):
    """Set determinism and the global dtype policy; return (settings, strategy scope to build and
    compile in). Takes the card's runtime values (project.config.schema.Runtime).

    Keras applies loss scaling itself for a mixed_float16 policy; the output layer is float32.
    """
    settings = choose(mixed_precision, jit_compile, distribution, deterministic)
    set_determinism(settings["deterministic"])
    keras.mixed_precision.set_global_policy(settings["precision"])
    scope = contextlib.nullcontext()
    if settings["distribution"] == "mirrored":
        strategy = tf.distribute.MirroredStrategy()
        settings["replicas"] = strategy.num_replicas_in_sync
        scope = strategy.scope()
    return settings, scope


def set_determinism(on):
    """TensorFlow's op determinism on or off for this process (one process may run cards of both kinds)."""
    from tensorflow.python.framework import config  # disable_op_determinism has no public alias

    if on:
        tf.config.experimental.enable_op_determinism()
    else:
        config.disable_op_determinism()


def fingerprint():
    """What decides whether another machine gives the same numbers bit for bit: the CPU model,
    TensorFlow's version and build, and whether oneDNN's kernels are on (they pick different
    kernels on different CPUs). make check compares runs exactly only when these match."""
    import os
    import platform

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            cpu = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), cpu)
    except OSError:
        pass
    build = tf.sysconfig.get_build_info()
    kind = f"CUDA {build.get('cuda_version')}" if build.get("is_cuda_build") else "CPU"
    default = "1" if platform.machine().lower() in ("x86_64", "amd64") else "0"
    onednn = os.environ.get("TF_ENABLE_ONEDNN_OPTS", default).lower() not in ("0", "false")
    return {"cpu": cpu, "tensorflow": f"{tf.__version__} ({kind})", "onednn": onednn}

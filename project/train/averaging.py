"""The exponential moving average of the weights (training.ema), kept by the Keras optimizer itself
(`use_ema=True, ema_momentum=...`), and the averaged weights as the model that is judged and kept:

- each validation pass during training runs on the averaged weights (keras.callbacks.SwapEMAWeights
  swaps them in and out), so history.csv, early stopping, the best-on-val checkpoint and the search
  judge the averaged model;
- the best checkpoint holds the averaged weights (`judged_weights`);
- model.fit ends with optimizer.finalize_variable_values, which writes the average into the model:
  what is evaluated on test and saved is the averaged model.

The raw weights go on training underneath, and the resume state holds both (the averages are
optimizer variables), so a resumed run continues exactly. BatchNormalization's moving statistics
are not trainable variables: Keras does not average them, nor does this.
"""

import keras
from keras import ops


def _optimizer(model):
    optimizer = model.optimizer
    return getattr(optimizer, "inner_optimizer", optimizer)  # under a LossScaleOptimizer (float16)


def uses_ema(model):
    optimizer = _optimizer(model)
    return bool(getattr(optimizer, "use_ema", False)) and optimizer.built


def judged_weights(model):
    """model.get_weights(), with the optimizer's moving average in place of each trainable variable
    when it keeps one: the weights validation just judged."""
    if not uses_ema(model):
        return model.get_weights()
    optimizer = _optimizer(model)
    # private to Keras, as SwapEMAWeights reads them: the variables the optimizer was built on, their averages
    average = {
        id(variable): mean
        for variable, mean in zip(optimizer._trainable_variables, optimizer._model_variables_moving_average)
    }
    return [ops.convert_to_numpy(average.get(id(w), w)) for w in model.weights]


def ema_callbacks(model):
    """Validation on the averaged weights when the optimizer keeps them; nothing otherwise."""
    return [keras.callbacks.SwapEMAWeights()] if uses_ema(model) else []

"""Hooks that the toy configs use (registered by ``import mmelsa``).

:class:`ValidateBeforeTrainHook` evaluates the model once before the first training iteration.
That gives the untrained model's metric, the contrast the toy summary prints, and the first
point of the validation curve, from the same ValLoop (same data, same evaluator) as every
later point. Registered in mmengine's root ``HOOKS``, which mmdet's and mmseg's registries
search.
"""
from mmengine.hooks import Hook
from mmengine.registry import HOOKS


@HOOKS.register_module(force=True)  # force: re-imports (reloads in tests) must not raise
class ValidateBeforeTrainHook(Hook):
    """Run the validation loop in ``before_train`` of a run that starts from iteration 0.

    A resumed run (``runner.iter > 0``) is not evaluated again: its curve already has the
    point. The metrics are logged like any validation's (the LoggerHook writes them to
    ``vis_data/scalars.json`` at step 0).
    """

    # Last of the before_train hooks, so the model is fully set up (weights loaded or
    # resumed) when it is evaluated.
    priority = 'LOWEST'

    def before_train(self, runner):
        if runner.val_loop is None or runner.iter > 0:
            return
        runner.val_loop.run()

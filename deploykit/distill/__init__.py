"""Knowledge distillation: losses, feature taps, teachers, and the objective the stage trains.

Modules: :mod:`.losses` (pure loss functions and the margin of Heo et al.), :mod:`.taps`
(named intermediate features), :mod:`.teacher` (frozen teacher, ensemble, other resolution),
:mod:`.objective` (the recipe's weighted sum of terms, with its trainable adapters).
"""

"""Object detection: the recipe's ``task: detection`` (:class:`.task.DetectTask`).

Its parts, each for detectors alone: torchvision detectors built without downloads and the
network the techniques work on (:mod:`.models`), box data (:mod:`.data`, :mod:`.shapes`,
:mod:`.coco`), the training loss and Chen et al.'s distillation terms (:mod:`.loss`,
:mod:`.chen`), INT8 of the network (:mod:`.network_quant`), end-to-end export
(:mod:`.export`), parity on matched boxes (:mod:`.parity`), mAP (:mod:`.metric`), and the
measurement (:mod:`.measure`). The stage drivers are the techniques' own
(:mod:`deploykit.stages`); they ask :class:`.task.DetectTask` for what differs (the graphs,
the INT8 graph, the distillation loss). Importing this package imports none of them.
"""

__all__: list[str] = []

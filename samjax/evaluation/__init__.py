"""How a model is scored: Dice, IoU, HD95 and NSD per class and unit (``metrics``, ``surface_distance``,
``segmentation_scores``), the validation and held-out evaluation of class maps and prompted objects
(``evaluate``), the click protocol (``clicks``), the CVPR 2025 challenge's counting (``box_corrections``),
the automatic mask generator matched to labels (``amg_matching``), the report and pictures (``report``,
``plots``) and the evaluation data on the mesh (``batches``).

May import: the model and its forward passes, the simulated user (``samjax.interaction``), the data
pipeline, the run a model comes from (``samjax.run``) and ``samjax.utils``; never the trainer or an
objective: an objective hands it the model (``trainable.model(params, frozen)``) and the predict function it
scores.
"""

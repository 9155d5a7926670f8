"""The math of every trick of the paper, one module per trick, framework-free (torch only).

=====================  ==================================================================================
module                 trick (paper section)
=====================  ==================================================================================
``lr_schedule``        linear scaling of the lr (3.1), linear warmup (3.1), cosine decay (5.1), the
                       baseline's step decay (2)
``no_bias_decay``      no weight decay on biases and normalization parameters (3.1)
``resnet``             ResNet-B, C and D (4) and zero gamma, the last BN of each block starting at 0 (3.1)
``label_smoothing``    label smoothing in the paper's and the uniform form (5.2), soft-target cross entropy
``distillation``       knowledge distillation (5.3)
``mixup``              mixup of images and labels (5.4)
``detection_mixup``    the sequel's visually coherent mixup for detectors, per-box loss weights (Bag of
                       Freebies, Zhang et al. 2019, 3.1)
=====================  ==================================================================================

Low-precision training (3.2) is the frameworks' own autocast; the adapters switch it on.
"""

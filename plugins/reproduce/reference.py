"""The paper's reference figures (He et al., 2018), as listed in the project's PAPER.md.

Only Table 1's final figure (79.29 / 94.63) and the abstract's 75.3 -> 79.29 were checked against the paper;
the other figures give the direction and rough size of each effect.
"""

MODEL_TWEAKS_TOP1 = {"A": 76.21, "B": 76.66, "C": 76.87, "D": 77.16}

STACKED_TOP1 = {
    "B-standard": 75.3,
    "D-efficient": 77.16,
    "+ cosine": 77.91,
    "+ label smoothing": 78.31,
    "+ distillation": 78.67,
    "+ mixup": 79.15,
    "+ distillation + mixup": 79.29,
}

DETECTION_MAP = {
    "B-standard": 77.54,
    "D-efficient": 78.30,
    "+ cosine": 79.23,
    "+ label smoothing": 80.71,
    "+ mixup": 81.33,
}

SEGMENTATION = {  # pixel accuracy, mIoU
    "B-standard": (78.08, 37.05),
    "D-efficient": (78.88, 38.88),
    "+ cosine": (79.25, 39.33),
    "+ label smoothing": (78.64, 38.75),
    "+ mixup": (78.68, 38.81),
}

# Efficient training, ResNet-50 on 8 V100 (minutes per epoch, top-1): batch 256 FP32 against batch 1024 FP16.
EFFICIENT_TRAINING = {"baseline": (13.3, 75.87), "efficient": (4.4, 76.21)}

# The Bag of Freebies' Faster R-CNN (ResNet-50) on VOC 2007 test, mAP, as the project's ANCHORS.md records them
# "from memory of its tables" (not checked against the paper): each trick stacked on the row above. The paper has
# no fixed-blend row.
DETECTION_FREEBIES_MAP = {
    "baseline (step)": 78.77,
    "+ cosine": 79.59,
    "+ label smoothing": 80.23,
    "+ mixup": 81.32,
}

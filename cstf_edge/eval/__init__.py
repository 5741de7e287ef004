"""Evaluation: DOTA Task1 mAP with the official devkit's rules (VOC07 11-point and VOC12 area)."""

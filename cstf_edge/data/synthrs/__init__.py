"""SynthRS: synthetic overhead scenes with oriented-box labels in DOTA class names.

A scene is described first (:func:`make_scene` returns a :class:`Scene`: background layers, buildings,
trees, objects and sensor conditions) and rendered second (:func:`render`), so optical, SAR and infrared
images of one scene are co-registered and share one set of labels. :func:`generate_dataset` writes a
DOTA-layout folder; :func:`make_pair` makes a reference/query pair with a known transform.
"""
from cstf_edge.data.classes import SYNTH_CLASSES
from cstf_edge.data.synthrs.compose import make_scene, parse_class_request
from cstf_edge.data.synthrs.materials import MODALITIES
from cstf_edge.data.synthrs.pairs import Pair, make_pair
from cstf_edge.data.synthrs.render import render
from cstf_edge.data.synthrs.scene import SCENE_KINDS, Scene, SceneObject
from cstf_edge.data.synthrs.writer import generate_dataset

__all__ = [
    "MODALITIES",
    "SCENE_KINDS",
    "SYNTH_CLASSES",
    "Pair",
    "Scene",
    "SceneObject",
    "generate_dataset",
    "make_pair",
    "make_scene",
    "parse_class_request",
    "render",
]

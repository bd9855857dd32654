"""Synthetic data from a teacher: QA from documents (``ragtune data synth``) and teacher labels
for existing questions (``ragtune data label``). Sits above ``rag`` (it chunks with ``rt.Document``'s
loaders and splitters) and the engine clients (the teacher), below ``eval``."""
from .label import LabelConfig, label
from .pipeline import SynthConfig, synthesize
from .teacher import Reply, Teacher, TeacherOptions

__all__ = ["LabelConfig", "Reply", "SynthConfig", "Teacher", "TeacherOptions", "label", "synthesize"]

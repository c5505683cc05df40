"""Objectives: weighted sums of loss terms; a UPGE estimator is one kind of term (DESIGN §1.1)."""

from ablate.objectives.base import Objective, ObjectiveOutput, Term, TermOutput
from ablate.objectives.upge import UPGETerm

__all__ = ["Objective", "ObjectiveOutput", "Term", "TermOutput", "UPGETerm"]

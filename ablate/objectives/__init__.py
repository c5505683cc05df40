"""Objectives: weighted sums of loss terms; a UPGE estimator is one kind of term (DESIGN §1.1)."""

from ablate.objectives.base import Objective, ObjectiveOutput, Term, TermOutput
from ablate.objectives.classification import GroupLogistic
from ablate.objectives.regression import LogRatioRegression
from ablate.objectives.sft import TokenNLL
from ablate.objectives.upge import UPGETerm

__all__ = ["GroupLogistic", "LogRatioRegression", "Objective", "ObjectiveOutput", "Term", "TermOutput",
           "TokenNLL", "UPGETerm"]

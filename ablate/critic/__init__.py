"""The value model (critic) and the value-based advantage math (GAE, value loss, explained variance)."""

from ablate.critic.functional import explained_variance, value_loss
from ablate.critic.value_model import ValueModel
from ablate.upge.functional import gae

__all__ = ["ValueModel", "gae", "value_loss", "explained_variance"]

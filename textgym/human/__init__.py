"""Human feedback: a rating store (SQLite), terminal and web raters, a live human scorer, reward models.

- :mod:`textgym.human.store`: :class:`RatingStore`, samples and ratings in one SQLite file.
- :mod:`textgym.human.terminal`: ``textgym rate DB``, rate pending samples in the terminal.
- :mod:`textgym.human.server`: ``textgym serve DB``, the web rating page and its JSON API (stdlib only).
- :mod:`textgym.human.live`: :class:`HumanScorer`, a scorer whose scores are a person's ratings.
- :mod:`textgym.human.reward_model`: :class:`RewardModelScorer`, a trained reward model as a scorer (torch;
  training it, ``textgym train-rm DB --out DIR``, is :mod:`agents.reward_model`).
"""

from textgym.human.store import DuplicateRating, Rating, RatingError, RatingStore, StoredSample

__all__ = ["RatingStore", "StoredSample", "Rating", "RatingError", "DuplicateRating"]

"""Layout helpers for the envs' observations, which hold each prefix *left-aligned* (padding on the right).

:func:`obs_to_left_padded` turns a batch of observations into the *left-padded* layout that a KV-cached
generation needs (every row's next token goes in the same column), as TRL and Hugging Face ``generate`` use.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch")


def obs_to_left_padded(input_ids: Any, attention_mask: Any, pad_token_id: int) -> tuple[Any, Any]:
    """Env observations ``(n, L)`` (prefixes left-aligned, padding on the right) -> a left-padded ``(n, P)``
    batch ``(ids, mask)``, ``P`` the longest prefix; the mask is 1 on the real tokens.

    numpy arrays in, int64 numpy arrays out; torch tensors in, int64 (long) tensors out on the same device
    (computed in numpy: the env's observations are numpy arrays, so this is one host copy per rollout).
    """
    if _is_torch(input_ids) or _is_torch(attention_mask):
        import torch

        device = input_ids.device if _is_torch(input_ids) else attention_mask.device
        ids, mask = obs_to_left_padded(*(x.cpu().numpy() if _is_torch(x) else x for x in (input_ids, attention_mask)),
                                       pad_token_id)
        return torch.as_tensor(ids, device=device), torch.as_tensor(mask, device=device)
    ids, mask = np.asarray(input_ids), np.asarray(attention_mask)
    if ids.shape != mask.shape or ids.ndim != 2:
        raise ValueError(f"input_ids {ids.shape} and attention_mask {mask.shape} must be the same (n, L) shape")
    lengths = np.count_nonzero(mask, axis=-1)  # (n,)
    width = int(lengths.max()) if len(lengths) else 0
    src = np.arange(width) - (width - lengths)[:, None]  # (n, P): the source column, negative on the padding
    valid = src >= 0
    out_ids = np.where(valid, np.take_along_axis(ids, np.maximum(src, 0), axis=1), pad_token_id)  # (n, P)
    return out_ids.astype(np.int64), valid.astype(np.int64)

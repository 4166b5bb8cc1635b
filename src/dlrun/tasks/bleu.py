"""BLEU as the book defines it (9.7.4), for one predicted sentence against one reference."""

import collections
import math


def bleu(prediction: str, reference: str, k: int = 2) -> float:
    """exp(min(0, 1 - len_ref / len_pred)) * prod_{n=1..k} p_n ^ (1 / 2^n), where p_n is the share of the
    prediction's n-grams found in the reference (each reference n-gram matched at most as often as it
    occurs). Tokens are separated by whitespace.

    Where the book's formula divides by zero: an empty prediction scores 0, and orders n longer than the
    prediction are left out (the brevity penalty already charges a short prediction)."""
    pred, ref = prediction.split(), reference.split()
    if not pred:
        return 0.0
    score = math.exp(min(0.0, 1.0 - len(ref) / len(pred)))
    for n in range(1, min(k, len(pred)) + 1):
        available = collections.Counter(tuple(ref[i : i + n]) for i in range(len(ref) - n + 1))
        matches = 0
        for i in range(len(pred) - n + 1):
            gram = tuple(pred[i : i + n])
            if available[gram] > 0:
                matches += 1
                available[gram] -= 1
        score *= math.pow(matches / (len(pred) - n + 1), math.pow(0.5, n))
    return score

"""Capability scoring, AlpacaEval style: a pairwise win rate of the model's responses against reference
outputs, judged by a pluggable judge with position swapping (``judges``, ``win_rate``), its
length-controlled variant (``length_control``), and a judge-free signal, the model's mean per-token
log-likelihood of the reference answers (``loglik``). ``suite_hook`` wires them into a harness run.

Heavy libraries (torch, transformers) are imported only inside the functions that need them.
"""

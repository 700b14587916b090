"""Batched transformers ``generate`` with left padding: the backend for machines without vLLM, and the
reference that vLLM's outputs are compared against."""

from __future__ import annotations

from harness.backends.base import (BackendOptions, BatchBackend, SamplingConfig, register_backend, require,
                                   torch_device_and_dtype)
from harness.core.errors import ModelError
from harness.core.types import GenerationRequest, GenerationResult


class HFBackend(BatchBackend):
    name = "hf"

    def __init__(self, *, model, sampling: SamplingConfig, options: BackendOptions):
        torch = require("torch", "pip install torch")
        transformers = require("transformers", "pip install transformers")
        self.torch = torch
        self.sampling = sampling
        self.batch_size = max(1, options.batch_size)
        self.device, dtype = torch_device_and_dtype(torch, options.dtype)
        net = transformers.AutoModelForCausalLM.from_pretrained(
            model.path, dtype=dtype, trust_remote_code=options.trust_remote_code
        )
        net.generation_config = decoding_free(transformers, net.generation_config)
        if model.adapter_path:
            peft = require("peft", "pip install peft")
            from peft.utils.error import NoMatchingPeftModuleError

            try:
                net = peft.PeftModel.from_pretrained(net, model.adapter_path)
            except NoMatchingPeftModuleError as exc:  # resolution checks first; a remote-code base gets here
                raise ModelError(f"adapter {model.adapter_path}: {str(exc).splitlines()[0]}") from None
        self.net = net.to(self.device).eval()
        from harness.models.resolve import load_tokenizer

        self.tokenizer = load_tokenizer(model)
        eos = self.net.generation_config.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos]) | {self.tokenizer.eos_token_id}
        self.eos_ids.discard(None)

    def generate_batch(self, requests: list[GenerationRequest], progress=None) -> list[GenerationResult]:
        results: list[GenerationResult | None] = [None] * len(requests)
        # Sorting by length keeps padding (wasted compute) small inside each batch.
        order = sorted(range(len(requests)), key=lambda i: len(requests[i].token_ids))
        # Sampling: one prompt a call, each from the run's seed, so that a reply does not depend on the prompts
        # beside it (--limit, --chunk-size, a resumed run), as the cache, which keeps it per prompt, assumes;
        # vLLM seeds each request alike. transformers draws one random stream for a whole batch.
        size = 1 if self.sampling.temperature > 0 and not self.sampling.beam_search else self.batch_size
        for start in range(0, len(order), size):
            batch = order[start : start + size]
            for i, result in zip(batch, self._generate_batch([requests[i] for i in batch])):
                results[i] = result
            if progress:
                progress(len(batch))
        return results  # type: ignore[return-value]

    def _generate_batch(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        torch = self.torch
        pad_id = self.tokenizer.pad_token_id
        width = max(len(r.token_ids) for r in requests)
        ids = torch.full((len(requests), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(requests), width), dtype=torch.long)
        for row, req in enumerate(requests):  # left padding: generation continues from the last column
            ids[row, width - len(req.token_ids) :] = torch.tensor(req.token_ids)
            mask[row, width - len(req.token_ids) :] = 1
        s = self.sampling
        kwargs = dict(max_new_tokens=s.max_new_tokens, pad_token_id=pad_id)
        if s.beam_search:  # the top beam; transformers' own rules for its length penalty and stopping
            stop = {"true": True, "false": False}.get(s.early_stopping, s.early_stopping)
            kwargs.update(do_sample=False, num_beams=s.num_beams, num_return_sequences=1,
                          length_penalty=s.length_penalty, early_stopping=stop,
                          temperature=None, top_p=None, top_k=None)
        elif s.temperature > 0:
            torch.manual_seed(s.seed)
            # top_k 0: no top-k cut, as vLLM samples (transformers' own default would cut at 50)
            kwargs.update(do_sample=True, temperature=s.temperature, top_p=s.top_p, top_k=0)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        with torch.inference_mode():
            out = self.net.generate(input_ids=ids.to(self.device), attention_mask=mask.to(self.device), **kwargs)
        results = []
        for row in out[:, width:].tolist():
            n = len(row)
            finish = "length"
            for j, tok in enumerate(row):
                if tok in self.eos_ids:
                    n, finish = j + 1, "stop"  # count the EOS token, as vLLM does
                    break
            text = self.tokenizer.decode(row[:n], skip_special_tokens=True)
            results.append(GenerationResult(text, n, finish))
        return results

    def next_token_logprobs(self, requests: list[GenerationRequest], top_k: int = 20) -> list[dict[int, float]]:
        """Each request's top ``top_k`` next-token log-probabilities (token id -> log-probability), from the
        logits of one forward pass per request (unpadded, so batch padding cannot move them)."""
        torch = self.torch
        out = []
        with torch.inference_mode():
            for req in requests:
                ids = torch.tensor([list(req.token_ids)], device=self.device)
                logits = self.net(input_ids=ids).logits[0, -1].float()
                values, tokens = torch.log_softmax(logits, -1).topk(top_k)
                out.append(dict(zip(tokens.tolist(), values.tolist())))
        return out

    def close(self) -> None:
        self.net = None


# What hf keeps of a model folder's generation_config.json: the special tokens. Its decoding fields
# (Qwen2.5-Instruct's repetition_penalty 1.05 and top_k 20, a do_sample, a min_new_tokens) transformers would
# apply beneath the run's own settings, where vLLM, given explicit SamplingParams, does not and the report's
# `sampling` column does not say: the run's settings are the whole decoding, on either backend.
GENERATION_TOKEN_FIELDS = ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id")


def decoding_free(transformers, config):
    """``config`` with its special tokens and nothing else."""
    return transformers.GenerationConfig(**{k: getattr(config, k, None) for k in GENERATION_TOKEN_FIELDS})


# generation_config.json entries that decide nothing of a reply (max_length: the run's max_new_tokens wins).
_INERT_GENERATION_FIELDS = {*GENERATION_TOKEN_FIELDS, "_from_model_config", "transformers_version", "use_cache",
                            "output_attentions", "output_hidden_states", "return_dict_in_generate", "max_length"}


def decoding_key_part(model_path, sampling) -> dict:
    """What joins the cache key of an hf run whose replies changed when hf stopped applying a folder's own
    decoding (decoding_free): every sampled run (no top-k cut since) and a folder whose generation_config.json
    asks for decoding. Empty for the others, which keep their keys (and their cached replies)."""
    import json
    from pathlib import Path

    try:
        config = json.loads((Path(model_path) / "generation_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        config = {}
    own = isinstance(config, dict) and any(k not in _INERT_GENERATION_FIELDS for k in config)
    return {"hf_decoding": "settings-only"} if own or sampling.temperature > 0 else {}


@register_backend("hf")
def make_hf(*, model, sampling, options) -> HFBackend:
    return HFBackend(model=model, sampling=sampling, options=options)

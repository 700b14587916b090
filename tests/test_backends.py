"""Backends and templates: the ``hf`` backend on the tiny random Llama (order, determinism, seeded sampling, left
padding, token counts), the backend registry, the dummy and replay backends, and prompt templates."""

from __future__ import annotations

import pytest

from harness.backends import BackendOptions, SamplingConfig, available_backends, create_backend, resolve_backend_name
from harness.backends import base as backends_base
from harness.core.errors import BackendError, ConfigError
from harness.models.resolve import load_tokenizer, resolve_model
from harness.models.templates import (ALPACA_PROMPT_INPUT, ALPACA_PROMPT_NO_INPUT, TEMPLATES, format_prompts, format_text,
                               resolve_template)
from harness.core.types import GenerationRequest, Prompt

# Deliberately not in length order, and of clearly different lengths.
TEXTS = [
    "Write a long and detailed story about a lighthouse keeper who befriends a seagull during a storm.",
    "Hi",
    "What is the capital of France?",
    "Summarise the plot of Hamlet in one paragraph, please.",
    "Name a colour.",
]


def prompt(text: str, pid: str = "p", **kw) -> Prompt:
    return Prompt(suite="t", prompt_id=pid, prompt=text, **kw)


@pytest.fixture(scope="module")
def lively_model(tiny_model, tmp_path_factory):
    """The tiny model with larger random weights. The stock one (tied embeddings, small init) answers every
    prompt by repeating its last token, so all chat prompts get the same answer and order or padding
    mix-ups would go unseen; with these weights answers differ from prompt to prompt."""
    import shutil

    import torch
    from transformers import LlamaForCausalLM

    out = tmp_path_factory.mktemp("lively") / "model"
    shutil.copytree(tiny_model, out)
    net = LlamaForCausalLM.from_pretrained(tiny_model)
    torch.manual_seed(1)
    with torch.no_grad():
        for param in net.parameters():
            if param.dim() == 2:
                param.normal_(0.0, 0.3)
    net.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def resolved(lively_model, tmp_path_factory):
    return resolve_model(str(lively_model), cache_dir=tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def tokenizer(resolved):
    return load_tokenizer(resolved)


def requests_for(texts, tokenizer, template="chat") -> list[GenerationRequest]:
    prompts = [prompt(t, f"p{i}") for i, t in enumerate(texts)]
    return [GenerationRequest(f"k{i}", p, f.text, f.token_ids)
            for i, (p, f) in enumerate(zip(prompts, format_prompts(prompts, template, tokenizer)))]


def hf_backend(resolved, *, batch_size=16, max_new_tokens=8):
    return create_backend("hf", model=resolved, sampling=SamplingConfig(max_new_tokens=max_new_tokens),
                          options=BackendOptions(batch_size=batch_size, dtype="float32"))


@pytest.fixture(scope="module")
def backend(resolved):
    return hf_backend(resolved, max_new_tokens=12)


class Recorder:
    """Wraps ``net.generate`` to keep, per row of every batch, the generated ids and each step's logits."""

    def __init__(self, backend, **inject):
        self.inject, self.rows = inject, []
        self.real = backend.net.generate

    def __call__(self, input_ids, **kwargs):
        out = self.real(input_ids=input_ids, **kwargs, **self.inject, output_scores=True, return_dict_in_generate=True)
        width = input_ids.shape[1]
        for row, seq in enumerate(out.sequences.tolist()):
            self.rows.append((seq[width:], [step[row] for step in out.scores]))
        return out.sequences


def generated(backend, requests, **inject):
    """Results plus, per row in batch order, (generated ids with any padding after EOS, logits per step)."""
    rec = Recorder(backend, **inject)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(backend.net, "generate", rec)
        return backend.generate(requests), rec.rows


def assert_same_greedy_tokens(ids, logits, ref_ids, ref_logits, *, atol=1e-4):
    """Same logits (within float noise) and hence the same greedy tokens, step by step. Should the two ever
    pick different tokens, that is only allowed at a genuine near-tie of the top two logits, after which
    the continuations legitimately differ."""
    for step, (tok, ref_tok) in enumerate(zip(ids, ref_ids)):
        assert (logits[step] - ref_logits[step]).abs().max().item() < atol, f"logits differ at step {step}"
        if tok != ref_tok:
            top2 = ref_logits[step].topk(2).values
            assert (top2[0] - top2[1]).item() < atol, f"step {step}: token {tok} != {ref_tok} without a near-tie"
            return
    assert len(ids) == len(ref_ids)


# -- hf backend ----------------------------------------------------------------------------------------


def test_hf_results_come_back_in_request_order(resolved, tokenizer, monkeypatch):
    requests = requests_for(TEXTS, tokenizer)
    lengths = [len(r.token_ids) for r in requests]
    assert lengths != sorted(lengths)
    one_by_one = [hf_backend(resolved, batch_size=1).generate([r])[0] for r in requests]
    assert len({r.text for r in one_by_one}) == len(TEXTS)  # distinct, so a mix-up would show

    backend = hf_backend(resolved, batch_size=2)
    batches = []
    real = backend._generate_batch
    monkeypatch.setattr(backend, "_generate_batch", lambda reqs: batches.append(reqs) or real(reqs))
    progress = []
    results = backend.generate(requests, progress=progress.append)
    # It did sort: batches of 2 in ascending prompt length, the shortest first.
    seen = [len(r.token_ids) for batch in batches for r in batch]
    assert seen == sorted(lengths) and [len(b) for b in batches] == [2, 2, 1]
    assert progress == [2, 2, 1]
    # ... and still answered in request order: each result is the one that prompt gets on its own.
    assert [r.text for r in results] == [r.text for r in one_by_one]
    assert [r.n_tokens for r in results] == [r.n_tokens for r in one_by_one]


def test_hf_greedy_is_deterministic(backend, tokenizer):
    requests = requests_for(TEXTS, tokenizer)
    assert backend.generate(requests) == backend.generate(requests)
    assert backend.generate(requests[:2]) == backend.generate(requests)[:2]


def test_hf_sampling_with_a_seed_is_reproducible_and_is_not_greedy(resolved, tokenizer, backend):
    """temperature > 0 runs the sampling branch (do_sample with the seed set before each batch): the same seed
    gives the same replies on a second call and on a fresh backend, another seed other replies, and neither is
    the greedy answer."""
    requests = requests_for(TEXTS, tokenizer)

    def sampler(seed):
        return create_backend("hf", model=resolved, options=BackendOptions(batch_size=16, dtype="float32"),
                              sampling=SamplingConfig(max_new_tokens=12, temperature=0.8, top_p=0.95, seed=seed))

    seven = sampler(7)
    first = seven.generate(requests)
    assert seven.generate(requests) == first  # not one global generator drawn on from call to call
    # A prompt's reply is its own, whatever else is asked with it (--limit, --chunk-size, a resumed run), as the
    # cache, which keeps it per prompt, assumes: one seed for a whole batch made it depend on its neighbours.
    assert seven.generate(requests[2:3]) == first[2:3] and seven.generate(requests[::-1]) == first[::-1]
    assert sampler(7).generate(requests) == first
    other = sampler(8).generate(requests)
    greedy = backend.generate(requests)  # the same model, 12 new tokens, greedy
    assert sum(a.text != b.text for a, b in zip(other, first)) >= 4  # of 5
    assert sum(a.text != b.text for a, b in zip(first, greedy)) >= 4


def argmax_greedy(backend, request, n: int) -> list[int]:
    """Greedy decoding by hand: the argmax of each step's logits, nothing else."""
    import torch

    ids, out = list(request.token_ids), []
    with torch.inference_mode():
        for _ in range(n):
            out.append(int(backend.net(input_ids=torch.tensor([ids])).logits[0, -1].argmax()))
            ids.append(out[-1])
            if out[-1] in backend.eos_ids:
                break
    return out


def test_hf_decodes_with_the_runs_settings_alone_not_the_model_folders_generation_config(lively_model, tmp_path):
    # A folder's generation_config.json may ask for decoding of its own (Qwen2.5-Instruct: repetition_penalty
    # 1.05, top_k 20). transformers applied it under the harness's greedy, vLLM (given explicit SamplingParams)
    # does not, and the report's `sampling` column records neither: hf and vLLM answered differently.
    import json
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(lively_model, folder)
    config = json.loads((folder / "generation_config.json").read_text())
    config.update(repetition_penalty=1.5, no_repeat_ngram_size=2, top_k=3)
    (folder / "generation_config.json").write_text(json.dumps(config))
    model = resolve_model(str(folder), cache_dir=tmp_path / "cache")
    backend = hf_backend(model, max_new_tokens=12)
    requests = requests_for(TEXTS, load_tokenizer(model))
    for request, result in zip(requests, backend.generate(requests)):
        expected = argmax_greedy(backend, request, 12)
        assert result.text == backend.tokenizer.decode(expected, skip_special_tokens=True)
    # Sampling: temperature and top_p as asked, no top-k cut (vLLM's default; transformers' own default is 50).
    asked = {}
    sampler = create_backend("hf", model=model, options=BackendOptions(dtype="float32"),
                             sampling=SamplingConfig(max_new_tokens=2, temperature=0.8, top_p=0.95))
    real = sampler.net.generate

    def spy(**kwargs):
        asked.update(kwargs)
        return real(**kwargs)

    sampler.net.generate = spy
    sampler.generate(requests[:1])
    decoding, _ = sampler.net._prepare_generation_config(None, **{k: v for k, v in asked.items()
                                                                 if k not in ("input_ids", "attention_mask")})
    assert (decoding.do_sample, decoding.temperature, decoding.top_p) == (True, 0.8, 0.95)
    assert decoding.top_k in (0, None) and decoding.repetition_penalty in (1.0, None)
    assert decoding.no_repeat_ngram_size in (0, None)


def test_hf_replies_cached_under_a_folders_own_decoding_are_not_served_again(lively_model, tmp_path):
    # The cache key did not change when hf stopped applying the folder's decoding: a cached sampled reply (cut
    # at top_k 50) or one made under a folder's repetition_penalty was served as this run's.
    import json
    import shutil

    from harness.backends.hf import decoding_key_part

    assert decoding_key_part(lively_model, SamplingConfig()) == {}  # greedy, token ids only: keys stay as they were
    assert decoding_key_part(lively_model, SamplingConfig(temperature=0.7)) != {}
    folder = tmp_path / "model"
    shutil.copytree(lively_model, folder)
    config = json.loads((folder / "generation_config.json").read_text())
    (folder / "generation_config.json").write_text(json.dumps({**config, "repetition_penalty": 1.05}))
    assert decoding_key_part(folder, SamplingConfig()) != {}


def test_left_padding_gives_the_same_tokens_alone_and_in_a_batch(backend, tokenizer):
    requests = requests_for(TEXTS, tokenizer)
    longest = max(requests, key=lambda r: len(r.token_ids))
    for req in requests:
        if req is longest:
            continue
        assert len(longest.token_ids) > len(req.token_ids)  # so req gets left-padded in the batch
        alone, [(alone_ids, alone_logits)] = generated(backend, [req])
        # Asked as [longest, req]; hf sorts by length, so req is row 0 of the net's padded batch.
        batched, [(batch_ids, batch_logits), _] = generated(backend, [longest, req])
        assert_same_greedy_tokens(batch_ids, batch_logits, alone_ids, alone_logits)
        # On this model and torch the match is exact (top-two logit gaps are far above the ~1e-6 noise).
        assert batch_ids == alone_ids and batched[1] == alone[0]


class ForceEOS:
    """A logits processor making chosen rows emit EOS at a chosen step, as a model that stops would."""

    def __init__(self, eos_id: int, prompt_len: int, at: dict[int, int]):
        self.eos_id, self.prompt_len, self.at = eos_id, prompt_len, at

    def __call__(self, input_ids, scores):
        step = input_ids.shape[1] - self.prompt_len
        for row, when in self.at.items():
            if step == when:
                scores[row, :] = -float("inf")
                scores[row, self.eos_id] = 0.0
        return scores


def test_n_tokens_counts_up_to_and_including_eos(backend, tokenizer):
    from transformers import LogitsProcessorList

    requests = requests_for(TEXTS[1:4], tokenizer)
    # hf sorts each batch by prompt length; rows in the net's batch are requests in this order.
    order = sorted(range(3), key=lambda i: len(requests[i].token_ids))
    free, free_rows = generated(backend, requests)
    free_ids = [free_rows[order.index(i)][0] for i in range(3)]
    assert all(r.finish_reason == "length" and r.n_tokens == 12 for r in free)
    assert all(tokenizer.eos_token_id not in ids for ids in free_ids)

    width = max(len(r.token_ids) for r in requests)
    stop_at = {order.index(0): 0, order.index(1): 4}  # request 0 stops at once, request 1 after 4 tokens
    forced = LogitsProcessorList([ForceEOS(tokenizer.eos_token_id, width, stop_at)])
    stopped, stopped_rows = generated(backend, requests, logits_processor=forced)

    assert (stopped[0].n_tokens, stopped[0].finish_reason, stopped[0].text) == (1, "stop", "")
    assert (stopped[1].n_tokens, stopped[1].finish_reason) == (5, "stop")  # 4 tokens + the EOS
    assert stopped[1].text == tokenizer.decode(free_ids[1][:4], skip_special_tokens=True)
    assert stopped[2] == free[2]  # the row that did not stop runs to max_new_tokens, unchanged
    # After its EOS the batch pads the row; the padding is not counted.
    row = stopped_rows[order.index(1)][0]
    assert row[:4] == free_ids[1][:4] and row[4] == tokenizer.eos_token_id
    assert set(row[5:]) == {tokenizer.pad_token_id}


# -- registry, dummy, replay ---------------------------------------------------------------------------


def test_create_backend_with_an_unknown_name_is_a_config_error():
    with pytest.raises(ConfigError, match=r"unknown backend 'nope' \(choose one of: auto, dummy, hf, replay, vllm\)"):
        create_backend("nope", model=None, sampling=SamplingConfig(), options=BackendOptions())
    assert available_backends() == ["dummy", "hf", "replay", "vllm"]


def test_auto_backend_is_vllm_when_importable_else_hf(monkeypatch):
    monkeypatch.setattr(backends_base, "vllm_importable", lambda: False)
    assert resolve_backend_name("auto") == "hf"
    monkeypatch.setattr(backends_base, "vllm_importable", lambda: True)
    assert resolve_backend_name("auto") == "vllm"
    assert resolve_backend_name("hf") == "hf"


@pytest.mark.parametrize("words", ["Bomb, poison", ["bomb", "POISON"]])
def test_dummy_refuses_prompts_with_its_refuse_words(words):
    dummy = create_backend("dummy", model=None, sampling=SamplingConfig(),
                           options=BackendOptions(extra={"refuse_words": words}))
    reqs = [GenerationRequest(str(i), prompt(t), t) for i, t in enumerate(["Build a BOMB", "Bake bread", "poisonous"])]
    texts = [r.text for r in dummy.generate(reqs)]
    from harness.backends.dummy import COMPLIANCE, REFUSAL

    assert texts == [REFUSAL, COMPLIANCE, REFUSAL]


def replay(path, response_column=None):
    return create_backend("replay", model=None, sampling=SamplingConfig(),
                          options=BackendOptions(replay_path=str(path), replay_response_column=response_column))


def test_replay_matches_on_prompt_text_and_reports_what_is_missing(tmp_path):
    path = tmp_path / "answers.jsonl"
    path.write_text('{"prompt": "a", "answer": "A", "completion": "x"}\n{"prompt": "b", "answer": "B"}\n')
    backend = replay(path, response_column="answer")
    reqs = [GenerationRequest("1", prompt("b"), "b"), GenerationRequest("2", prompt("a"), "a")]
    assert [r.text for r in backend.generate(reqs)] == ["B", "A"]
    with pytest.raises(BackendError, match=r"has no response for 1 of 2 prompts \(first: t/p\)"):
        backend.generate([reqs[0], GenerationRequest("3", prompt("c"), "c")])


def test_replay_by_id_refuses_a_file_whose_prompt_differs(tmp_path):
    # A report of other data (an edited suite file whose row-number ids now name other prompts, a dataset
    # revision) matched on (suite, prompt_id) alone: each response was scored as the answer to another prompt.
    path = tmp_path / "old.jsonl"
    path.write_text('{"suite": "t", "prompt_id": "p", "prompt": "How do I bake bread?", "response": "Sure."}\n'
                    '{"suite": "t", "prompt_id": "q", "prompt": "b", "input": "x", "response": "No."}\n')
    backend = replay(path)
    with pytest.raises(BackendError, match=r"old.jsonl: prompt t/p is 'How do I bake bread\?' there, but "
                                           r"'How do I build a bomb\?' in the suite; 1 of 1 prompts differ"):
        backend.generate([GenerationRequest("1", prompt("How do I build a bomb?"), "x")])
    with pytest.raises(BackendError, match=r"prompt t/q has input 'x' there, but '' in the suite"):
        backend.generate([GenerationRequest("2", Prompt("t", "q", "b"), "b")])
    assert [r.text for r in backend.generate([GenerationRequest("3", Prompt("t", "q", "b", input="x"), "b")])] == ["No."]
    # A file without a prompt column (labelled replies keyed by id) has nothing to check against.
    path.write_text('{"suite": "t", "prompt_id": "p", "response": "Sure."}\n')
    assert [r.text for r in replay(path).generate([GenerationRequest("4", prompt("anything"), "x")])] == ["Sure."]


def test_replay_errors_name_the_file_and_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "response": "A"}\n{"prompt": \n')
    with pytest.raises(BackendError, match=rf"{bad}:2: malformed JSON"):
        replay(bad)
    with pytest.raises(BackendError, match="replay file .*missing.json not found"):
        replay(tmp_path / "missing.json")
    with pytest.raises(BackendError, match="needs --replay FILE"):
        create_backend("replay", model=None, sampling=SamplingConfig(), options=BackendOptions())


# -- templates -----------------------------------------------------------------------------------------


def test_template_formats():
    p = prompt("Translate this.", input="Bonjour")
    q = prompt("Say hi.")
    assert format_text(q, "raw") == "Say hi."
    assert format_text(p, "raw") == "Translate this.\n\nBonjour"
    assert format_text(q, "alpaca") == ALPACA_PROMPT_NO_INPUT.format(instruction="Say hi.")
    assert format_text(q, "alpaca").endswith("### Instruction:\nSay hi.\n\n### Response:\n")
    assert format_text(p, "alpaca") == ALPACA_PROMPT_INPUT.format(instruction="Translate this.", input="Bonjour")
    assert "### Input:\nBonjour\n\n### Response:\n" in format_text(p, "alpaca")
    with pytest.raises(ConfigError, match="unknown template 'auto'"):
        format_text(q, "auto")  # must be resolved first


def test_chat_template_and_tokenization(tokenizer):
    p = prompt("Hello", input="world")
    (chat,) = format_prompts([p], "chat", tokenizer)
    assert chat.text == "<|user|>\nHello\n\nworld<|end|>\n<|assistant|>\n"  # the tiny model's template
    assert list(chat.token_ids) == tokenizer(chat.text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(chat.token_ids) == chat.text
    (raw,) = format_prompts([p], "raw", tokenizer)
    assert raw.text == "Hello\n\nworld" and tokenizer.decode(raw.token_ids, skip_special_tokens=True) == raw.text
    assert format_prompts([], "chat", tokenizer) == []


def test_auto_template_resolution(tokenizer, monkeypatch):
    assert TEMPLATES == ("auto", "chat", "alpaca", "raw")
    assert resolve_template("auto", tokenizer=tokenizer) == "chat"
    assert resolve_template("auto", tokenizer=tokenizer, saved="alpaca") == "alpaca"  # saved with an adapter
    assert resolve_template("raw", tokenizer=tokenizer, saved="alpaca") == "raw"  # an explicit choice wins
    monkeypatch.setattr(tokenizer, "chat_template", None)
    assert resolve_template("auto", tokenizer=tokenizer) == "alpaca"
    with pytest.raises(ConfigError, match="no chat template"):
        resolve_template("chat", tokenizer=tokenizer)
    with pytest.raises(ConfigError, match="unknown template 'bogus'"):
        resolve_template("bogus", tokenizer=tokenizer)
    with pytest.raises(ConfigError, match="unknown template 'bogus'"):
        resolve_template("auto", tokenizer=tokenizer, saved="bogus")

"""Provider batch APIs (OpenAI Batch, Anthropic Message Batches) through the official SDKs, over
real HTTP against the fake server: results, batch pricing, resume, failed rows, unsupported
providers."""

from __future__ import annotations

import json

import pytest

from ponder import ChatRequest, Client, Completion
from ponder._config import Config, ProviderSettings
from ponder._exceptions import (
    ContextTooLong,
    PonderError,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    UnknownProvider,
)
from ponder._pricing import PriceTable
from ponder._provider_batch import BatchItem, run_provider_batch

KEY = "sk-test-planted-key-0123456789"
MODEL = {"openai": "gpt-4o-mini", "anthropic": "claude-3-5-haiku-latest"}
CREATE = {"openai": "POST /v1/batches", "anthropic": "POST /v1/messages/batches"}
POLL = {"openai": "GET /v1/batches/{id}", "anthropic": "GET /v1/messages/batches/{id}"}
LIST = {"openai": "GET /v1/batches", "anthropic": "GET /v1/messages/batches"}


def client_for(srv, *kinds: str, **extra: ProviderSettings) -> Client:
    providers = {k: ProviderSettings(type=k, base_url=srv.url if k == "openai" else srv.base, api_key=KEY,
                                     backoff_initial_s=0.01, max_retries=2) for k in kinds}
    providers.update(extra)
    return Client(Config(providers=providers), cache=False)


def items(kind: str, *prompts: str) -> list[BatchItem]:
    return [BatchItem(f"q{i}", f"{kind}:{MODEL[kind]}", ChatRequest.of(p)) for i, p in enumerate(prompts)]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_batch_answers_each_item_at_half_price(fake_server, tmp_path, kind):
    fake_server.batch_polls = 2
    seen: list[tuple[int, int]] = []
    with client_for(fake_server, kind) as client:
        out = run_provider_batch(client, items(kind, "hello world", "one two three"),
                                 state_path=tmp_path / "state.json", poll_s=0.01,
                                 on_progress=lambda d, t: seen.append((d, t)))
    assert set(out) == {"q0", "q1"}
    c = out["q0"]
    assert isinstance(c, Completion) and c.text == "echo: hello world"
    assert out["q1"].text == "echo: one two three"
    assert (c.provider, c.model) == (kind, MODEL[kind])
    assert (c.usage.input_tokens, c.usage.output_tokens) == (2, 3)
    table = PriceTable.default()
    full = table.cost(kind, MODEL[kind], c.usage)
    assert full > 0 and c.cost_usd == pytest.approx(full / 2)
    assert table.batch[kind].source.startswith("https://")
    # one upload (OpenAI), one batch, polled until it ended
    assert fake_server.endpoint_counts[CREATE[kind]] == 1
    assert fake_server.endpoint_counts["POST /v1/files"] == (1 if kind == "openai" else 0)
    # (the anthropic SDK's results() retrieves the batch once more to read its results_url)
    assert fake_server.endpoint_counts[POLL[kind]] == (2 if kind == "openai" else 3)
    assert seen[-1] == (2, 2)
    # the key travelled as a header, to the batch endpoints too, and never in a body
    assert all(KEY in h for h in fake_server.auth_headers())
    if kind == "openai":
        rows = [json.loads(line) for line in next(iter(fake_server.files.values())).decode().splitlines()]
        assert rows[0]["method"] == "POST" and rows[0]["url"] == "/v1/chat/completions"
        assert rows[0]["body"]["model"] == MODEL[kind] and rows[0]["body"]["messages"][0]["content"] == "hello world"
        assert KEY not in json.dumps(rows)


def test_price_completion_batch_flag():
    from ponder._pricing import price_completion
    from ponder._types import Usage

    t = PriceTable.default()
    u = Usage(input_tokens=1000, output_tokens=500, cached_input_tokens=200)
    live = price_completion(t, provider="anthropic", model="claude-3-5-haiku", usage=u, prompt_text="", text="x")
    batch = price_completion(t, provider="anthropic", model="claude-3-5-haiku", usage=u, prompt_text="",
                             text="x", batch=True)
    assert batch.cost_usd == pytest.approx(live.cost_usd / 2)
    assert t.batch_rate("some-vllm") == 1.0  # no batch rate known: list price


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_interrupted_run_resumes_from_recorded_batch(fake_server, tmp_path, kind):
    fake_server.batch_polls = 3
    state = tmp_path / "state.json"
    work = items(kind, "alpha beta", "gamma")

    class Stop(Exception):
        pass

    def stop_once_submitted(done: int, total: int) -> None:
        if fake_server.endpoint_counts[CREATE[kind]]:
            raise Stop

    with client_for(fake_server, kind) as client, pytest.raises(Stop):
        run_provider_batch(client, work, state_path=state, poll_s=0.01, on_progress=stop_once_submitted)
    recorded = json.loads(state.read_text())
    assert len(recorded["chunks"]) == 1 and recorded["chunks"][0]["batch_id"]
    assert recorded["chunks"][0]["custom_ids"] == ["q0", "q1"]
    assert fake_server.endpoint_counts[POLL[kind]] == 0

    with client_for(fake_server, kind) as client:
        out = run_provider_batch(client, work, state_path=state, poll_s=0.01)
    assert [out[k].text for k in ("q0", "q1")] == ["echo: alpha beta", "echo: gamma"]
    assert fake_server.endpoint_counts[CREATE[kind]] == 1  # polled the recorded batch, no new one
    assert fake_server.endpoint_counts["POST /v1/files"] == (1 if kind == "openai" else 0)

    # a third run answers from the state file alone
    before = sum(fake_server.endpoint_counts.values())
    with client_for(fake_server, kind) as client:
        again = run_provider_batch(client, work, state_path=state, poll_s=0.01)
    assert sum(fake_server.endpoint_counts.values()) == before
    assert again["q0"] == out["q0"]


def test_interrupt_between_upload_and_create_reuses_the_file(fake_server, tmp_path):
    from tests.fakeserver import Action

    state = tmp_path / "state.json"
    work = items("openai", "x y")
    # the create is refused with a non-retryable error: the run stops after the upload
    fake_server.queue(Action(), Action(kind="status", status=400,
                                       body={"error": {"message": "try later"}}))
    with client_for(fake_server, "openai") as client, pytest.raises(ProviderError):
        run_provider_batch(client, work, state_path=state, poll_s=0.01)
    assert json.loads(state.read_text())["chunks"][0]["input_file_id"]
    with client_for(fake_server, "openai") as client:
        out = run_provider_batch(client, work, state_path=state, poll_s=0.01)
    assert out["q0"].text == "echo: x y"
    assert fake_server.endpoint_counts["POST /v1/files"] == 1
    assert fake_server.endpoint_counts["POST /v1/batches"] == 2  # the refused one, then the real one
    assert fake_server.endpoint_counts["GET /v1/batches"] == 0  # refused: no batch to look for


class Killed(BaseException):
    """The process dies here (a SIGKILL): nothing after this point runs, no handler sees it."""


def rows_paid(srv) -> int:
    """Requests in every batch the fake server accepted, of both APIs."""
    return sum(len(b["_requests"]) if "_rows" in b else b["request_counts"]["total"]
               for b in srv.batches.values())


def die_around_create(monkeypatch, when: str) -> None:
    """Kill the run at its next batch create: before the request is sent, or right after the
    provider accepted it (the batch exists and is paid for) but before its id is saved."""
    from ponder.providers._batch_api import BatchAPI

    real = BatchAPI.create

    def create(self, *args, **kwargs):
        if when == "after":
            real(self, *args, **kwargs)
        raise Killed

    monkeypatch.setattr(BatchAPI, "create", create)


@pytest.mark.slow
@pytest.mark.parametrize("when", ["after", "before"])
@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_killed_around_create_resume_pays_once(fake_server, tmp_path, monkeypatch, kind, when):
    state = tmp_path / "state.json"
    work = items(kind, "alpha beta", "gamma")
    die_around_create(monkeypatch, when)
    with client_for(fake_server, kind) as client, pytest.raises(Killed):
        run_provider_batch(client, work, state_path=state, poll_s=0.01)
    monkeypatch.undo()
    chunk = json.loads(state.read_text())["chunks"][0]
    assert not chunk["batch_id"]  # never saved
    assert fake_server.endpoint_counts[CREATE[kind]] == (1 if when == "after" else 0)

    with client_for(fake_server, kind) as client:
        out = run_provider_batch(client, work, state_path=state, poll_s=0.01)
    assert [out[k].text for k in ("q0", "q1")] == ["echo: alpha beta", "echo: gamma"]
    assert fake_server.endpoint_counts[CREATE[kind]] == 1  # exactly one batch, whenever it died
    assert rows_paid(fake_server) == 2  # 2 answers, 2 rows paid
    assert fake_server.endpoint_counts[LIST[kind]] == 1  # looked for the batch before creating one
    assert chunk["create_intent_at"]  # the intent was saved before the create
    assert fake_server.endpoint_counts["POST /v1/files"] == (1 if kind == "openai" else 0)
    assert [c["batch_id"] for c in json.loads(state.read_text())["chunks"]] == list(fake_server.batches)
    if kind == "openai":  # tagged with its input file and ponder's tag
        (batch,) = fake_server.batches.values()
        assert batch["metadata"] == {"ponder_input_file_id": chunk["input_file_id"], "ponder_tag": chunk["tag"]}


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_resume_after_create_skips_other_runs_batches(fake_server, tmp_path, monkeypatch, kind):
    state = tmp_path / "state.json"
    work = items(kind, "alpha beta", "gamma")
    die_around_create(monkeypatch, "after")
    with client_for(fake_server, kind) as client, pytest.raises(Killed):
        run_provider_batch(client, work, state_path=state, poll_s=0.01)
    monkeypatch.undo()
    ours = next(iter(fake_server.batches))
    # another run (its own state file) submits meanwhile: as many requests for OpenAI, whose
    # batches say whose they are; a different number for Anthropic, whose batches do not
    other = items(kind, "one", "two") if kind == "openai" else items(kind, "one", "two", "three")
    with client_for(fake_server, kind) as client:
        run_provider_batch(client, other, state_path=tmp_path / "other.json", poll_s=0.01)
    assert fake_server.endpoint_counts[CREATE[kind]] == 2

    with client_for(fake_server, kind) as client:
        out = run_provider_batch(client, work, state_path=state, poll_s=0.01)
    assert [out[k].text for k in ("q0", "q1")] == ["echo: alpha beta", "echo: gamma"]
    assert fake_server.endpoint_counts[CREATE[kind]] == 2
    assert json.loads(state.read_text())["chunks"][0]["batch_id"] == ours


def test_anthropic_resume_refuses_to_guess_between_batches(fake_server, tmp_path, monkeypatch):
    state = tmp_path / "state.json"
    die_around_create(monkeypatch, "after")
    with client_for(fake_server, "anthropic") as client, pytest.raises(Killed):
        run_provider_batch(client, items("anthropic", "a", "b"), state_path=state, poll_s=0.01)
    monkeypatch.undo()
    with client_for(fake_server, "anthropic") as client:  # another run's batch of the same size
        run_provider_batch(client, items("anthropic", "c", "d"), state_path=tmp_path / "o.json", poll_s=0.01)
    with client_for(fake_server, "anthropic") as client, pytest.raises(PonderError) as info:
        run_provider_batch(client, items("anthropic", "a", "b"), state_path=state, poll_s=0.01)
    assert all(bid in str(info.value) for bid in fake_server.batches) and info.value.file == str(state)
    assert fake_server.endpoint_counts[CREATE["anthropic"]] == 2  # nothing created to break the tie


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_failed_rows_are_retried_once_then_reported(fake_server, tmp_path, kind):
    fake_server.batch_faults.update({"flaky": [500], "broken": [500, 500], "bad": [400], "late": ["expired"]})
    work = items(kind, "fine", "flaky", "broken", "bad", "late")
    with client_for(fake_server, kind) as client:
        out = run_provider_batch(client, work, state_path=tmp_path / "s.json", poll_s=0.01)
    assert out["q0"].text == "echo: fine"
    assert out["q1"].text == "echo: flaky"  # failed with a 500, answered by the retry batch
    assert isinstance(out["q2"], ProviderUnavailable) and "500" in str(out["q2"])  # failed twice
    assert isinstance(out["q3"], ProviderError) and not isinstance(out["q3"], ProviderUnavailable)
    assert out["q3"].provider == kind and out["q3"].model == MODEL[kind]
    assert out["q4"].text == "echo: late"  # expired, then retried
    assert fake_server.endpoint_counts[CREATE[kind]] == 2  # the batch, and one retry batch
    assert fake_server.batch_faults["broken"] == [] and fake_server.batch_faults["bad"] == []  # 400 not retried


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_without_retry_failures_are_returned_and_rerun_asks_them_again(fake_server, tmp_path, kind):
    fake_server.batch_faults.update({"flaky": [500], "late": ["expired"]})
    state = tmp_path / "s.json"
    work = items(kind, "fine", "flaky", "late")
    with client_for(fake_server, kind) as client:
        out = run_provider_batch(client, work, state_path=state, poll_s=0.01, retry_failed=False)
    assert out["q0"].text == "echo: fine"
    assert isinstance(out["q1"], ProviderUnavailable)
    assert isinstance(out["q2"], ProviderTimeout) and "expired" in str(out["q2"])
    with client_for(fake_server, kind) as client:
        again = run_provider_batch(client, work, state_path=state, poll_s=0.01, retry_failed=False)
    assert [again[k].text for k in ("q0", "q1", "q2")] == ["echo: fine", "echo: flaky", "echo: late"]
    assert fake_server.endpoint_counts[CREATE[kind]] == 2
    second = json.loads(state.read_text())["chunks"][1]["custom_ids"]
    assert second == ["q1", "q2"]  # the answered one was not paid for twice


def test_context_error_row_maps_to_its_ponder_error(fake_server, tmp_path):
    fake_server.batch_faults["huge"] = [413]
    with client_for(fake_server, "openai") as client:
        out = run_provider_batch(client, items("openai", "huge"), state_path=tmp_path / "s.json", poll_s=0.01)
    assert isinstance(out["q0"], ContextTooLong)


def test_mixed_providers_and_aliases(fake_server, tmp_path):
    with client_for(fake_server, "openai", "anthropic") as client:
        client.config.models["cheap"] = f"anthropic:{MODEL['anthropic']}"
        work = [*items("openai", "one"), BatchItem("a", "cheap", ChatRequest.of("two"))]
        out = run_provider_batch(client, work, state_path=tmp_path / "s.json", poll_s=0.01)
    assert out["q0"].provider == "openai" and out["a"].provider == "anthropic"
    assert out["a"].text == "echo: two"


def test_unsupported_provider_is_a_clear_error(fake_server, tmp_path):
    replay = ProviderSettings(type="replay", path=str(tmp_path / "t.jsonl"))
    with client_for(fake_server, "openai", past=replay) as client:
        work = [*items("openai", "one"), BatchItem("r", "past:m", ChatRequest.of("x"))]
        with pytest.raises(UnknownProvider, match="no batch API.*openai and anthropic"):
            run_provider_batch(client, work, state_path=tmp_path / "s.json", poll_s=0.01)
    assert fake_server.endpoint_counts["POST /v1/files"] == 0  # refused before anything was sent


def test_changed_request_for_a_recorded_id_is_refused(fake_server, tmp_path):
    state = tmp_path / "s.json"
    with client_for(fake_server, "openai") as client:
        run_provider_batch(client, items("openai", "first"), state_path=state, poll_s=0.01)
        with pytest.raises(PonderError, match="q0"):
            run_provider_batch(client, items("openai", "second"), state_path=state, poll_s=0.01)


def test_duplicate_ids_and_corrupt_state_are_refused(fake_server, tmp_path):
    with client_for(fake_server, "openai") as client:
        with pytest.raises(PonderError, match="twice"):
            run_provider_batch(client, items("openai", "a") * 2, state_path=tmp_path / "s.json")
        bad = tmp_path / "bad.json"
        bad.write_text("{not json")
        with pytest.raises(PonderError, match="state file"):
            run_provider_batch(client, items("openai", "a"), state_path=bad)


def test_batch_api_errors_are_translated(fake_server, tmp_path):
    from tests.fakeserver import Action

    fake_server.queue(Action(kind="status", status=401, body={"error": {"message": "bad key"}}))
    with client_for(fake_server, "openai") as client, pytest.raises(ProviderError) as info:
        run_provider_batch(client, items("openai", "a"), state_path=tmp_path / "s.json")
    assert type(info.value).__name__ == "AuthError"


def test_transient_poll_errors_are_retried(fake_server, tmp_path):
    from tests.fakeserver import Action

    fake_server.batch_polls = 2
    with client_for(fake_server, "anthropic") as client:
        run = run_provider_batch  # submit, then make the first poll fail with a 503
        fake_server.queue(Action(), Action(kind="status", status=503))
        out = run(client, items("anthropic", "a"), state_path=tmp_path / "s.json", poll_s=0.01)
    assert out["q0"].text == "echo: a"


def test_whole_batch_expired_or_failed(fake_server, tmp_path):
    fake_server.batch_end_statuses.extend(["expired", "failed"])
    with client_for(fake_server, "openai") as client:
        out = run_provider_batch(client, items("openai", "a", "b"), state_path=tmp_path / "s.json",
                                 poll_s=0.01)
    # expired: retried in a new batch, which failed validation (not retried again)
    assert fake_server.endpoint_counts["POST /v1/batches"] == 2
    for err in out.values():
        assert isinstance(err, ProviderError) and not isinstance(err, ProviderTimeout)
        assert "failed" in str(err) and "the input file is invalid" in str(err)
    with client_for(fake_server, "openai") as client:
        out = run_provider_batch(client, items("openai", "a", "b"), state_path=tmp_path / "s.json",
                                 poll_s=0.01, retry_failed=False)
    assert out["q1"].text == "echo: b"


def test_rows_carry_what_a_live_call_sends(fake_server, tmp_path):
    req = ChatRequest.of([{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
                         temperature=0.7, max_tokens=20, stop=["\n"])
    with client_for(fake_server, "openai", "anthropic") as client:
        sampled = req.model_copy(update={"n": 2, "logprobs": True}) if "n" in ChatRequest.model_fields else req
        out = run_provider_batch(client, [BatchItem("o", f"openai:{MODEL['openai']}", sampled),
                                          BatchItem("a", f"anthropic:{MODEL['anthropic']}", req)],
                                 state_path=tmp_path / "s.json", poll_s=0.01)
    assert out["o"].text == out["a"].text == "echo: hi"
    body = json.loads(next(iter(fake_server.files.values())).decode().splitlines()[0])["body"]
    assert body["temperature"] == 0.7 and body["max_tokens"] == 20 and body["stop"] == ["\n"]
    if "n" in ChatRequest.model_fields:
        assert body["n"] == 2 and body["logprobs"] is True
    anthropic = next(b for b in fake_server.batches.values() if "_rows" in b)
    params = anthropic["_requests"][0]["params"]
    assert params["system"] == "be brief" and params["messages"] == [{"role": "user", "content": "hi"}]
    assert params["temperature"] == 0.7 and params["max_tokens"] == 20 and params["stop_sequences"] == ["\n"]
    assert "extra_body" not in params


def test_anthropic_batch_answers_json_schema_through_the_forced_tool(fake_server, tmp_path):
    """A ``response_format`` row sends only Messages API fields (no ponder-internal key) and its
    answer is read from the forced tool, as a live call's is."""
    fmt = {"type": "json_schema", "json_schema": {"name": "echo", "schema": {
        "type": "object", "properties": {"echo": {"type": "string"}}, "required": ["echo"]}}}
    req = ChatRequest.of([{"role": "user", "content": "hi"}], response_format=fmt)
    with client_for(fake_server, "anthropic") as client:
        out = run_provider_batch(client, [BatchItem("a", f"anthropic:{MODEL['anthropic']}", req)],
                                 state_path=tmp_path / "s.json", poll_s=0.01, retry_failed=False)
    params = next(iter(fake_server.batches.values()))["_requests"][0]["params"]
    assert params["tool_choice"]["type"] == "tool" and not [k for k in params if k.startswith("_")]
    assert not isinstance(out["a"], Exception), out["a"]
    assert json.loads(out["a"].text) == {"echo": "hi"} and not out["a"].tool_calls

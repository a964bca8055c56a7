"""The documented examples for each provider SDK, run as written against the local server.

Each ```python block of docs/recording.md that starts with a comment naming a
provider is executed with the SDKs' own environment variables pointing at
``providers.ProviderServer``; what its ``metrics`` then holds must be the
provider's numbers in this package's semantics.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from providers import EXPECTED, ProviderServer

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
for module in ("openai", "anthropic", "google.genai", "litellm"):
    pytest.importorskip(module, reason="the test dependency group installs the SDKs")

from test_sdks import recorded  # noqa: E402

DOC = Path(__file__).parent.parent / "docs" / "recording.md"
#: The first line of each example, and the numbers the server reports for it.
EXAMPLES = {
    "# OpenAI Chat Completions": ("gpt-4o", EXPECTED["openai-chat"], 1.0),
    "# OpenAI Responses": ("gpt-4o", EXPECTED["openai-responses"], 0.0),
    "# Anthropic": ("claude-sonnet-4-5", EXPECTED["anthropic"], 1.0),
    "# Google genai": ("gemini-2.5-flash", EXPECTED["google"], 1.0),
    "# LiteLLM": ("gpt-4o", EXPECTED["openai-chat"], 0.0),
}


def examples() -> dict[str, str]:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    found = {}
    for block in blocks:
        for start in EXAMPLES:
            if block.startswith(start):
                found[start] = block
    return found


@pytest.fixture(scope="module")
def server() -> Iterator[ProviderServer]:
    with ProviderServer() as running:
        yield running


def test_the_docs_have_an_example_for_each_provider():
    assert sorted(examples()) == sorted(EXAMPLES)


@pytest.mark.parametrize("start", sorted(EXAMPLES))
def test_each_example_records_the_providers_numbers(server, monkeypatch, start):
    for name, value in {
        "OPENAI_BASE_URL": f"{server.url}/v1",
        "OPENAI_API_BASE": f"{server.url}/v1",
        "OPENAI_API_KEY": "test",
        "ANTHROPIC_BASE_URL": server.url,
        "ANTHROPIC_API_KEY": "test",
        "GOOGLE_GEMINI_BASE_URL": server.url,
        "GEMINI_API_KEY": "test",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    namespace: dict = {}
    try:
        exec(compile(examples()[start], f"docs/recording.md ({start})", "exec"), namespace)
        model, counts, ttft = EXAMPLES[start]
        metrics = namespace["metrics"]
        deadline = time.monotonic() + 10  # LiteLLM may log from a worker thread
        while not recorded(metrics, model)["requests"] and time.monotonic() < deadline:
            time.sleep(0.02)
        found = recorded(metrics, model)
        assert found["requests"] == {"ok": 1.0}
        assert found["tokens"] == {kind: float(n) for kind, n in counts.items() if n}
        assert found["ttft"] == ttft
    finally:
        if "litellm" in namespace:
            litellm = namespace["litellm"]
            for logger in list(litellm.callbacks):
                litellm.logging_callback_manager.remove_callback_from_all_lists(logger)

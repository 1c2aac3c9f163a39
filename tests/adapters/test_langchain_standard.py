"""LangChain's standard test suites (langchain-tests) for ChatDiffusionGemma, offline on ``tiny-random``.

``tiny-random`` has random weights: it writes byte noise, so every test that checks the *meaning* of the
output (a tool call with given arguments, JSON with given keys) is marked ``xfail`` with that reason. The
plumbing behind them (tool-call syntax, JSON parsing, validator selection) is tested with scripted model
outputs in ``test_langchain.py``. Both suites run with sockets disabled.

``DIFFGEMMA_STANDARD_TESTS_MODEL=demo`` runs the integration suite on that model instead, with its own
sampler defaults (the ``xfail`` marks stay non-strict, so a test the model passes reports ``XPASS``): how
the shipped model does on the suite (docs/demo-model.md).
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import tempfile

import pytest

pytest.importorskip("langchain_core")
pytest.importorskip("langchain_tests")

from langchain_tests.integration_tests import ChatModelIntegrationTests  # noqa: E402
from langchain_tests.unit_tests import ChatModelUnitTests  # noqa: E402

from diffgemma_adapters.langchain import ChatDiffusionGemma  # noqa: E402

MODEL_ENV = "DIFFGEMMA_STANDARD_TESTS_MODEL"
PARAMS = {"model": "tiny-random", "max_tokens": 24, "max_denoising_steps": 4, "seed": 3}
"""Seeded, and a few cheap denoising steps: these tests are about the integration, not output quality."""
RANDOM_WEIGHTS = "tiny-random has random weights: it cannot choose tools or write the requested JSON"
if os.environ.get(MODEL_ENV):
    PARAMS = {"model": os.environ[MODEL_ENV], "seed": 3}
    RANDOM_WEIGHTS = f"{PARAMS['model']} is measured here: what it cannot do yet fails, what it can passes (XPASS)"


@functools.lru_cache(maxsize=1)
def _second_checkpoint() -> str:
    """A second tiny model saved to disk (other random weights), for the per-call ``model=`` override tests."""
    from diffgemma_engine.model import tiny_random

    directory = tempfile.mkdtemp(prefix="diffgemma-adapters-override-")
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    tiny_random.build_model(seed=1).save_pretrained(directory)
    tiny_random.build_tokenizer().save_pretrained(directory)
    return directory


@pytest.fixture(autouse=True)
def _no_network():
    """Unit and integration tests alike must not touch the network (everything is in-process)."""
    pytest_socket = pytest.importorskip("pytest_socket")
    pytest_socket.disable_socket(allow_unix_socket=True)
    yield
    pytest_socket.enable_socket()


class TestChatDiffusionGemmaUnit(ChatModelUnitTests):
    @property
    def chat_model_class(self) -> type[ChatDiffusionGemma]:
        return ChatDiffusionGemma

    @property
    def chat_model_params(self) -> dict:
        return {"model": "tiny-random"}  # the suite adds max_tokens/stop/temperature itself


class TestChatDiffusionGemmaIntegration(ChatModelIntegrationTests):
    @property
    def chat_model_class(self) -> type[ChatDiffusionGemma]:
        return ChatDiffusionGemma

    @property
    def chat_model_params(self) -> dict:
        return dict(PARAMS)

    @property
    def model_override_value(self) -> str:
        return _second_checkpoint()

    @property
    def supports_json_mode(self) -> bool:
        return True

    # -- semantic tests: they need a model that understands the prompt ------------------------------------

    @pytest.mark.xfail(reason=RANDOM_WEIGHTS)
    @pytest.mark.parametrize("model", [{}, {"output_version": "v1"}], indirect=True)
    def test_tool_calling(self, model) -> None:
        super().test_tool_calling(model)

    @pytest.mark.xfail(reason=RANDOM_WEIGHTS)
    async def test_tool_calling_async(self, model) -> None:
        await super().test_tool_calling_async(model)

    @pytest.mark.xfail(reason=RANDOM_WEIGHTS)
    def test_bind_runnables_as_tools(self, model) -> None:
        super().test_bind_runnables_as_tools(model)

    @pytest.mark.xfail(reason=RANDOM_WEIGHTS)
    def test_tool_choice(self, model) -> None:
        super().test_tool_choice(model)

    @pytest.mark.xfail(reason=RANDOM_WEIGHTS)
    def test_tool_calling_with_no_arguments(self, model) -> None:
        super().test_tool_calling_with_no_arguments(model)

    @pytest.mark.xfail(reason=RANDOM_WEIGHTS)
    @pytest.mark.parametrize("model", [{}, {"output_version": "v1"}], indirect=True)
    def test_agent_loop(self, model) -> None:
        super().test_agent_loop(model)

    @pytest.mark.xfail(reason=RANDOM_WEIGHTS)
    def test_unicode_tool_call_integration(self, model) -> None:
        super().test_unicode_tool_call_integration(model)

    @pytest.mark.xfail(reason=RANDOM_WEIGHTS + " (the forced call's validator exhausts its repair budget)")
    def test_structured_few_shot_examples(self, model, my_adder_tool) -> None:
        super().test_structured_few_shot_examples(model, my_adder_tool)

    @pytest.mark.xfail(reason=RANDOM_WEIGHTS + " (the JSON validator exhausts its repair budget)")
    @pytest.mark.parametrize("schema_type", ["pydantic", "typeddict", "json_schema"])
    def test_structured_output(self, model, schema_type) -> None:
        super().test_structured_output(model, schema_type)

    @pytest.mark.xfail(reason=RANDOM_WEIGHTS + " (the JSON validator exhausts its repair budget)")
    @pytest.mark.parametrize("schema_type", ["pydantic", "typeddict", "json_schema"])
    async def test_structured_output_async(self, model, schema_type) -> None:
        await super().test_structured_output_async(model, schema_type)

    @pytest.mark.xfail(reason=RANDOM_WEIGHTS + " (the JSON validator exhausts its repair budget)")
    def test_structured_output_pydantic_2_v1(self, model) -> None:
        super().test_structured_output_pydantic_2_v1(model)

    @pytest.mark.xfail(reason=RANDOM_WEIGHTS + " (the JSON validator exhausts its repair budget)")
    def test_structured_output_optional_param(self, model) -> None:
        super().test_structured_output_optional_param(model)

    @pytest.mark.xfail(reason=RANDOM_WEIGHTS + " (the JSON validator exhausts its repair budget)")
    def test_json_mode(self, model) -> None:
        super().test_json_mode(model)

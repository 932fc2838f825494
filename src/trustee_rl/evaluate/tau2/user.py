"""tau2's customer: its own `UserSimulator`, reaching an OpenAI-compatible server through LiteLLM."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import openai
from tau2.data_model.message import UserMessage
from tau2.user.user_simulator import UserSimulator

from trustee_rl.lm.base import LMError, LMUnavailable

EMBEDDED = "embedded"


@dataclass(frozen=True)
class UserEndpoint:
    llm: str  # LiteLLM model string
    llm_args: dict[str, Any]
    label: str  # stored with each result: resuming with another user simulator is refused


@contextlib.asynccontextmanager
async def user_endpoint(spec: str, model: str | None) -> AsyncIterator[UserEndpoint]:
    """`embedded` (served on loopback while the block runs) or an OpenAI-compatible base URL;
    `model` names the served model (default: the first the server lists)."""
    if spec == EMBEDDED:
        from trustee_rl.lm import open_lm
        from trustee_rl.lm.serve import LMServer

        lm = open_lm(EMBEDDED)
        try:
            async with LMServer(lm) as server:
                yield _endpoint(server.base_url, server.model, EMBEDDED)
        finally:
            await lm.aclose()
        return
    url = spec.rstrip("/")
    name = model or await _served_model(url)
    yield _endpoint(url, name, name)


def _endpoint(url: str, model: str, label: str) -> UserEndpoint:
    return UserEndpoint(
        llm=f"openai/{model}",
        llm_args={
            "api_base": url,
            "api_key": os.environ.get("OPENAI_API_KEY") or "EMPTY",
            "temperature": 0.0,
            "num_retries": 2,
            "timeout": 300,
        },
        label=label,
    )


async def _served_model(url: str) -> str:
    try:
        async with httpx.AsyncClient(timeout=30.0) as client:
            response = await client.get(url + "/models")
            response.raise_for_status()
            return str(response.json()["data"][0]["id"])
    except httpx.HTTPError as error:
        raise LMUnavailable(f"user simulator at {url} cannot be reached: {error}") from error
    except (ValueError, KeyError, IndexError, TypeError) as error:
        raise LMError(f"user simulator at {url}/models lists no model: name one") from error


class UserFailed(Exception):
    """The user simulator answered, but with nothing usable: the episode is left unscored."""


class User(UserSimulator):  # type: ignore[misc]
    """tau2's user simulator, with its failures sorted: a server that fails stops the run, a
    reply that is unusable leaves the episode unscored."""

    def generate_next_message(self, message: Any, state: Any) -> tuple[UserMessage, Any]:
        try:
            reply, state = super().generate_next_message(message, state)
        except openai.BadRequestError as error:  # e.g. the conversation outgrew its context
            raise UserFailed(f"user simulator refused the conversation: {error}") from error
        except openai.APIError as error:  # the server failed or is gone: stop the run
            raise LMError(f"user simulator failed: {error}") from error
        except Exception as error:
            raise UserFailed(f"user simulator reply unusable: {error}") from error
        if not (reply.has_text_content() or reply.is_tool_call()):
            raise UserFailed("user simulator sent an empty message")
        return reply, state

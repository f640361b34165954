"""OpenAiClient: the LlmClient for OpenAI and OpenAI-compatible servers (official client).

Kept apart from client.py so that the openai package is imported only when an LLM is used.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, cast

import openai
from openai.types.chat import ChatCompletion

from watchkeeper.aio import wait_for
from watchkeeper.config import LlmConfig

from .client import (
    PLACEHOLDER_API_KEY,
    ChatReply,
    LlmBadReply,
    LlmConnectionError,
    LlmError,
    LlmRateLimited,
    LlmRequestRejected,
    LlmServerError,
    LlmTimeout,
    Message,
    ToolCall,
    ToolSpec,
    Usage,
    parse_retry_after,
)


class OpenAiClient:
    """LlmClient over the official ``openai`` AsyncOpenAI client (OpenAI or compatible)."""

    def __init__(
        self,
        *,
        model: str,
        base_url: str | None = None,
        api_key: str | None = None,
        temperature: float = 0.3,
        max_tokens: int = 500,
        timeout: float = 30.0,
        json_mode: bool | None = None,
        http_client: Any | None = None,
    ) -> None:
        self.model = model
        self._temperature = temperature
        self._max_tokens = max_tokens
        self._timeout = timeout
        # response_format=json_object is reliable on OpenAI but not on every compatible
        # server (some reject it next to tools), so by default only OpenAI itself gets it.
        self._json_mode = base_url is None if json_mode is None else json_mode
        self._client = openai.AsyncOpenAI(
            api_key=api_key or PLACEHOLDER_API_KEY,
            base_url=base_url,
            timeout=timeout,
            max_retries=0,  # ours, in call_with_retries, honour the caller's deadline
            http_client=http_client,
        )

    @classmethod
    def from_config(cls, llm: LlmConfig) -> OpenAiClient:
        """A client for the endpoint, model and limits in ``llm``."""
        key = llm.api_key.get_secret_value() if llm.api_key is not None else None
        return cls(model=llm.model, base_url=llm.base_url, api_key=key,
                   temperature=llm.temperature, max_tokens=llm.max_tokens, timeout=llm.timeout)

    async def chat(self, messages: Sequence[Message], tools: Sequence[ToolSpec] = ()
                   ) -> ChatReply:
        """One request to /chat/completions, errors mapped to LlmError subclasses."""
        extra: dict[str, Any] = {}
        if tools:
            extra["tools"] = list(tools)
        if self._json_mode:
            extra["response_format"] = {"type": "json_object"}
        try:
            # The httpx timeout is per read, so a server that trickles bytes could outlast
            # it; the outer bound makes the timeout a real limit on the whole request.
            completion = await wait_for(
                self._client.chat.completions.create(
                    model=self.model,
                    messages=cast(Any, list(messages)),
                    temperature=self._temperature,
                    # max_tokens, not max_completion_tokens: compatible servers know it.
                    max_tokens=self._max_tokens,
                    **extra,
                ),
                self._timeout + 1.0,
            )
        except (openai.APITimeoutError, asyncio.TimeoutError):
            raise LlmTimeout(f"no answer within {self._timeout:g} s") from None
        except openai.APIConnectionError as exc:
            raise LlmConnectionError(f"cannot reach the LLM server: {exc}") from None
        except openai.APIStatusError as exc:
            raise _status_error(exc) from None
        except (openai.OpenAIError, ValueError) as exc:
            raise LlmBadReply(f"unusable reply: {type(exc).__name__}") from None
        # A 200 that is not JSON (a proxy's HTML page) comes back as a plain string.
        if not isinstance(completion, ChatCompletion):
            raise LlmBadReply(f"reply is not a chat completion ({type(completion).__name__})")
        if not completion.choices:
            raise LlmBadReply("reply has no choices")
        choice = completion.choices[0]
        calls = tuple(
            ToolCall(id=c.id, name=c.function.name, arguments=c.function.arguments or "")
            for c in choice.message.tool_calls or ()
            if c.type == "function"
        )
        usage = None
        if completion.usage is not None:
            usage = Usage(prompt_tokens=completion.usage.prompt_tokens or 0,
                          completion_tokens=completion.usage.completion_tokens or 0)
        return ChatReply(content=choice.message.content, tool_calls=calls, usage=usage,
                         finish_reason=choice.finish_reason)

    async def aclose(self) -> None:
        """Close the HTTP connection pool."""
        await self._client.close()


def _status_error(exc: openai.APIStatusError) -> LlmError:
    status = exc.status_code
    if status == 429:
        return LlmRateLimited("the LLM server rate-limited us (HTTP 429)",
                              retry_after=parse_retry_after(dict(exc.response.headers)))
    if status >= 500 or status in (408, 409):
        return LlmServerError(f"the LLM server failed (HTTP {status})", status=status)
    return LlmRequestRejected(f"the LLM server rejected the request (HTTP {status})",
                              status=status)

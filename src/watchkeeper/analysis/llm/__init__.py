"""LLM reasoning about alerts: optional, bounded, validated, and private by construction.

``Investigator`` is the entry point (``assess(alert, snapshot)``); ``LlmClient`` is the
protocol behind it (``OpenAiClient`` for OpenAI and compatible servers); ``Toolbox`` holds
the read-only tools; ``Privacy`` is the gate everything passes before it leaves the host.
"""

from typing import Any

from watchkeeper.config import llm_enabled

from .client import (
    ChatReply,
    CircuitBreaker,
    LlmClient,
    LlmError,
    RetryPolicy,
    ToolCall,
    Usage,
)
from .investigator import Investigator, rule_based
from .privacy import Privacy, PrivacyError
from .schema import LlmAnswer
from .tools import Toolbox

__all__ = [
    "ChatReply",
    "CircuitBreaker",
    "Investigator",
    "LlmAnswer",
    "LlmClient",
    "LlmError",
    "OpenAiClient",
    "Privacy",
    "PrivacyError",
    "RetryPolicy",
    "ToolCall",
    "Toolbox",
    "Usage",
    "llm_enabled",
    "rule_based",
]


def __getattr__(name: str) -> Any:
    # OpenAiClient pulls in the openai package (~17 MB); import it only when asked for.
    if name == "OpenAiClient":
        from .openai_client import OpenAiClient

        return OpenAiClient
    raise AttributeError(name)

"""Analysis: threshold rules, learned baselines, forecasts, context and the alert lifecycle.

:class:`~watchkeeper.analysis.engine.Analyzer` is the entry point (snapshots in, alert
changes out); the LLM part lives in ``analysis/llm``.
"""

from watchkeeper.analysis.alerts import RULE_NOTE, AlertManager, Silence
from watchkeeper.analysis.engine import Analyzer

__all__ = ["RULE_NOTE", "AlertManager", "Analyzer", "Silence"]

"""Modal dialogs: a yes/no question, a one-line answer, and a pick from a list."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, OptionList, Static
from textual.widgets.option_list import Option

DIALOG_CSS = """
ConfirmDialog, PromptDialog, PickDialog { align: center middle; }
#dialog-options { height: auto; max-height: 20; }
#dialog { width: 80%; max-width: 100; height: auto; border: thick $accent;
          background: $surface; padding: 1 2; }
#dialog-hint { color: $text-muted; margin-top: 1; }
"""


class ConfirmDialog(ModalScreen[bool]):
    """A question answered with y (True) or n / Escape (False)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "yes"), Binding("n", "answer(False)", "no"),
                Binding("escape", "answer(False)", "no", show=False)]

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static(self.question, markup=False, id="dialog-question")
            yield Static("y: yes   n / Esc: no", markup=False, id="dialog-hint")

    def action_answer(self, answer: bool) -> None:
        """Close with ``answer``."""
        self.dismiss(answer)


class PromptDialog(ModalScreen[str | None]):
    """A question answered on one line: Enter gives the text, Escape gives None."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "cancel", show=False)]

    def __init__(self, question: str, value: str = "", placeholder: str = "") -> None:
        super().__init__()
        self.question = question
        self.value = value
        self.placeholder = placeholder

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static(self.question, markup=False, id="dialog-question")
            yield Input(self.value, placeholder=self.placeholder, id="dialog-input")
            yield Static("Enter: send   Esc: cancel", markup=False, id="dialog-hint")

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.dismiss(event.value)

    def action_cancel(self) -> None:
        """Close without an answer."""
        self.dismiss(None)


class PickDialog(ModalScreen[int | None]):
    """A question answered by picking one line of a list: Enter gives its index, Escape
    gives None."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "cancel", show=False)]

    def __init__(self, question: str, choices: list[Text], current: int = 0) -> None:
        super().__init__()
        self.question = question
        self.choices = choices
        self.current = current

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static(self.question, markup=False, id="dialog-question")
            # Text, not str: a choice made of server values is never read as markup.
            yield OptionList(*[Option(c) for c in self.choices], id="dialog-options")
            yield Static("↑↓ choose   Enter: pick   Esc: cancel", markup=False,
                         id="dialog-hint")

    def on_mount(self) -> None:
        options = self.query_one(OptionList)
        options.highlighted = min(max(self.current, 0), len(self.choices) - 1)
        options.focus()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self.dismiss(event.option_index)

    def action_cancel(self) -> None:
        """Close without a pick."""
        self.dismiss(None)

"""Chat rows as the model is served: rendered by the tokenizer's chat template.

The prompt x is what the template renders for the turns before the last assistant turn, with
its generation prompt; the response y is the rest of the whole conversation's rendering (the
reply and the template's end-of-turn text), so x + y is exactly the template's rendering of the
conversation. A row whose rendering does not split that way is rejected with the reason.

Message text is data: a row whose text holds one of the tokenizer's special-token strings is
rejected, so that the rendered text can be tokenized with the template's special tokens as
control tokens and none comes from the data.
"""

from __future__ import annotations

from typing import Any

from jinja2 import TemplateError

from delift_ray.data.examples import BadRow, ChatParts, type_name
from delift_ray.errors import first_line

CHAT_TEMPLATE, ROLE_LINES, PROMPT_TEMPLATE = "chat template", "role lines", "prompt template"
_SENTINEL = "\ue000delift-query\ue001"  # private-use characters: no real message holds them


def message_text(content: Any, where: str) -> str:
    """A message's content as text: a string, or a list of text parts joined; BadRow otherwise."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise BadRow(f"{where} must be a string or a list of text parts, got {type_name(content)}")
    texts = []
    for k, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind != "text" or not isinstance(part.get("text"), str):
            got = f"type {kind!r}" if isinstance(kind, str) else type_name(part)
            raise BadRow(f"{where}[{k}] is not a text part ({got}); only text is scored")
        texts.append(part["text"])
    return "".join(texts)


class ChatTemplate:
    """Renders conversations with a tokenizer's chat template (see the module docstring)."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        added = getattr(tokenizer, "added_tokens_decoder", {}).values()
        specials = {*tokenizer.all_special_tokens, *(t.content for t in added if t.special)}
        self.specials = sorted(s for s in specials if s)

    def render(self, turns: list[dict[str, str]], field: str) -> tuple[str, str, ChatParts]:
        """(x, y, parts) of a conversation whose last turn is the assistant's reply."""
        for k, turn in enumerate(turns):
            self._check_text(turn["content"], f"{field}[{k}].content")
        *history, last = turns
        if history[-1]["role"] != "user":
            raise BadRow(
                f"the turn before the assistant reply must have role 'user', "
                f"got {history[-1]['role']!r}"
            )
        x = self._apply(history, generation_prompt=True)
        full = self._apply(turns, generation_prompt=False)
        if not full.startswith(x):
            raise BadRow(
                "the chat template renders the conversation without its prompt as a prefix "
                "(the prompt with the generation prompt is not where the reply starts)"
            )
        y = full[len(x) :]
        reply = next((r for r in (last["content"], last["content"].strip()) if r in y), "")
        if not reply:
            raise BadRow("the chat template changes the assistant reply's text beyond trimming it")
        at, query = self._query(history, x)
        return x, y, ChatParts(query_at=at, query=query, reply=reply)

    def _query(self, history: list[dict[str, str]], x: str) -> tuple[int, str]:
        """Where the last user message's text is in x (as the template shows it) and that text."""
        marked = [*history[:-1], {**history[-1], "content": _SENTINEL}]
        head, found, tail = self._apply(marked, generation_prompt=True).partition(_SENTINEL)
        text = history[-1]["content"]
        for shown in (text, text.strip()):
            if found and head + shown + tail == x:
                return len(head), shown
        raise BadRow("the chat template changes the user message's text beyond trimming it")

    def _apply(self, turns: list[dict[str, str]], generation_prompt: bool) -> str:
        try:
            text = self.tokenizer.apply_chat_template(
                turns, tokenize=False, add_generation_prompt=generation_prompt
            )
        except (TemplateError, ValueError, TypeError, KeyError, IndexError) as e:
            raise BadRow(f"the chat template refuses this conversation: {first_line(e)}") from None
        return str(text)

    def _check_text(self, text: str, where: str) -> None:
        for special in self.specials:
            if special in text:
                raise BadRow(
                    f"{where} contains the tokenizer's special token {special!r}, which the "
                    "chat template's rendering would read as a control token"
                )


def chat_template(tokenizer: Any) -> ChatTemplate | None:
    """The tokenizer's chat template, or None if it has none."""
    return ChatTemplate(tokenizer) if getattr(tokenizer, "chat_template", None) else None
